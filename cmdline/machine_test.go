package cmdline

import "testing"

func TestParseName(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "vm1", want: "vm1"},
		{in: "guest=vm1,debug-threads=on", want: "vm1"},
		{in: "guest=vm1,process=p", want: "vm1"},
		{in: "a,,b", want: "a,b"},
		{in: "guest=a,guest=b", want: "b"},
		{in: "", want: ""},
		{in: "debug-threads=on", want: ""},
		{in: "vm1,bogus=1", err: "Invalid parameter 'bogus'"},
		{in: "vm1,debug-threads=maybe", err: "Parameter 'debug-threads' expects 'on' or 'off'"},
		{in: "vm1,id=x", err: "Invalid parameter 'id'"},
	} {
		got, err := ParseName(tc.in)
		if (err == nil && tc.err != "") || (err != nil && err.Error() != tc.err) || got != tc.want {
			t.Errorf("ParseName(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseMachineDisplay(t *testing.T) {
	for _, tc := range []struct{ in, machineErr, displayErr string }{
		{"none", "", ""},
		{"type=none", "", ""},
		{"pc", "machine type 'pc' is not supported: minivmm has only 'none'", "display type 'pc' is not supported: minivmm has only 'none'"},
		{"", "machine type '' is not supported: minivmm has only 'none'", "display type '' is not supported: minivmm has only 'none'"},
		{"none,accel=kvm", "Invalid parameter 'accel'", "Invalid parameter 'accel'"},
		{"none,gl=on", "Invalid parameter 'gl'", "Invalid parameter 'gl'"},
	} {
		for _, c := range []struct {
			name string
			f    func(string) error
			want string
		}{{"ParseMachine", ParseMachine, tc.machineErr}, {"ParseDisplay", ParseDisplay, tc.displayErr}} {
			err := c.f(tc.in)
			if (err == nil && c.want != "") || (err != nil && err.Error() != c.want) {
				t.Errorf("%s(%q) = %v, want %q", c.name, tc.in, err, c.want)
			}
		}
	}
}
