package cmdline

import "testing"

func TestParseMon(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mon
		err  string // QEMU 7.2's texts where it has the case
	}{
		{in: "chardev=charmonitor,id=monitor,mode=control", want: Mon{ID: "monitor", Chardev: "charmonitor", Mode: "control"}},
		{in: "c,mode=control,pretty=on", want: Mon{Chardev: "c", Mode: "control", Pretty: true}},
		{in: "chardev=c,mode=control,pretty", want: Mon{Chardev: "c", Mode: "control", Pretty: true}},
		{in: "chardev=c", err: "mode=readline (HMP, the default) is not supported: minivmm has only mode=control (QMP)"},
		{in: "chardev=c,mode=readline", err: "mode=readline (HMP, the default) is not supported: minivmm has only mode=control (QMP)"},
		{in: "chardev=c,mode=bogus", err: "Parameter 'mode' does not accept value 'bogus'"},
		{in: "mode=bogus", err: "Parameter 'mode' does not accept value 'bogus'"},
		{in: "mode=control", err: "Parameter 'chardev' is missing"},
		{in: "", err: "Parameter 'chardev' is missing"},
		{in: "chardev=c,mode=control,bogus=1", err: "Invalid parameter 'bogus'"},
		{in: "chardev=c,mode=control,pretty=maybe", err: "Parameter 'pretty' expects 'on' or 'off'"},
		{in: "chardev=c,mode=control,id=1", err: "Parameter 'id' expects an identifier"},
	} {
		got, err := ParseMon(tc.in)
		if tc.err != "" || err != nil {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseMon(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("ParseMon(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
