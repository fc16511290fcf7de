package cmdline

import (
	"reflect"
	"testing"
)

func TestParseOpts(t *testing.T) {
	for _, tc := range []struct {
		in, implied string
		want        Opts
		err         string
	}{
		{in: "", want: Opts{}},
		{in: "fd=3,set=2", want: Opts{Elems: []Opt{{"fd", "3"}, {"set", "2"}}}},
		{in: "a=1,,", want: Opts{Elems: []Opt{{"a", "1,"}}}},
		{in: "a=1,", want: Opts{Elems: []Opt{{"a", "1"}}}},
		{in: "a=x,,y,b=", want: Opts{Elems: []Opt{{"a", "x,y"}, {"b", ""}}}},
		{in: "a=,,,b=1", want: Opts{Elems: []Opt{{"a", ","}, {"b", "1"}}}},
		{in: "a=,,,,", want: Opts{Elems: []Opt{{"a", ",,"}}}},
		{in: "a=b=c", want: Opts{Elems: []Opt{{"a", "b=c"}}}},
		{in: "a=1,a=2", want: Opts{Elems: []Opt{{"a", "1"}, {"a", "2"}}}},
		{in: "server,nowait", want: Opts{Elems: []Opt{{"server", "on"}, {"wait", "off"}}}},
		{in: "no", want: Opts{Elems: []Opt{{"", "off"}}}},
		{in: ",fd=3", want: Opts{Elems: []Opt{{"", "on"}, {"fd", "3"}}}},
		{in: "=x", want: Opts{Elems: []Opt{{"", "x"}}}},
		{in: "socket,id=x", implied: "backend", want: Opts{ID: "x", Elems: []Opt{{"backend", "socket"}}}},
		{in: "a,,b,c", implied: "guest", want: Opts{Elems: []Opt{{"guest", "a,b"}, {"c", "on"}}}},
		{in: ",x=1", implied: "backend", want: Opts{Elems: []Opt{{"backend", ""}, {"x", "1"}}}},
		{in: "x=1,socket", implied: "backend", want: Opts{Elems: []Opt{{"x", "1"}, {"socket", "on"}}}},
		{in: "id=a,id=b,k=v", want: Opts{ID: "a", Elems: []Opt{{"k", "v"}}}}, // QEMU keeps the first id
		{in: "id=a.b-c_1", want: Opts{ID: "a.b-c_1"}},
		{in: "id=1x", err: "Parameter 'id' expects an identifier"},
		{in: "id=", err: "Parameter 'id' expects an identifier"},
		{in: "id=a,b", want: Opts{ID: "a", Elems: []Opt{{"b", "on"}}}},
	} {
		got, err := ParseOpts(tc.in, tc.implied)
		if tc.err != "" || err != nil {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseOpts(%q, %q) error = %v, want %q", tc.in, tc.implied, err, tc.err)
			}
			continue
		}
		if !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("ParseOpts(%q, %q) = %+v, want %+v", tc.in, tc.implied, *got, tc.want)
		}
	}
}

func TestOptsGetKeysString(t *testing.T) {
	o, err := ParseOpts("path=/a,,b,server,id=m,path=/c,nowait", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key, want string
		ok        bool
	}{{"path", "/c", true}, {"server", "on", true}, {"wait", "off", true}, {"id", "m", true}, {"x", "", false}} {
		if v, ok := o.Get(tc.key); v != tc.want || ok != tc.ok {
			t.Errorf("Get(%q) = %q, %v; want %q, %v", tc.key, v, ok, tc.want, tc.ok)
		}
	}
	if got, want := o.Keys(), []string{"path", "server", "wait"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Keys() = %q, want %q", got, want)
	}
	if got, want := o.String(), "id=m,path=/a,,b,server=on,path=/c,wait=off"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestOptsValidate(t *testing.T) {
	kinds := map[string]Kind{"id": OptString, "s": OptString, "b": OptBool, "n": OptNumber, "z": OptSize}
	for _, tc := range []struct {
		in   string
		kind map[string]Kind
		err  string
	}{
		{"s=x,b=on,n=0x10,z=1k,id=a", kinds, ""},
		{"bogus=1", kinds, "Invalid parameter 'bogus'"},
		{"b=maybe", kinds, "Parameter 'b' expects 'on' or 'off'"},
		{"n=abc", kinds, "Parameter 'n' expects a number"},
		{"n=99999999999999999999", kinds, "Value '99999999999999999999' is too large for parameter 'n'"},
		{"z=-1", kinds, "Parameter 'z' expects a non-negative number below 2^64"},
		{"z=16E", kinds, "Value '16E' is out of range for parameter 'z'"},
		{"n=abc,bogus=1", kinds, "Parameter 'n' expects a number"}, // first bad element wins
		{"bogus=1,n=abc", kinds, "Invalid parameter 'bogus'"},
		{"n=abc,n=1", kinds, "Parameter 'n' expects a number"}, // even when overridden
		{"b", kinds, ""},
		{"nob", kinds, ""},
		{"id=a", map[string]Kind{}, "Invalid parameter 'id'"},
		{",s=1", kinds, "Invalid parameter ''"},
	} {
		o, err := ParseOpts(tc.in, "")
		if err != nil {
			t.Fatalf("ParseOpts(%q): %v", tc.in, err)
		}
		err = o.Validate(tc.kind)
		if (err == nil && tc.err != "") || (err != nil && err.Error() != tc.err) {
			t.Errorf("Validate(%q) = %v, want %q", tc.in, err, tc.err)
		}
	}
}

func TestOptsTypedGetters(t *testing.T) {
	o, err := ParseOpts("b=yes,n=-1,z=1.5k,bad=x", "")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := o.Bool("b", false); !v || err != nil {
		t.Errorf("Bool(b) = %v, %v", v, err)
	}
	if v, err := o.Bool("absent", true); !v || err != nil {
		t.Errorf("Bool(absent) = %v, %v", v, err)
	}
	if v, err := o.Int("n", 0); v != -1 || err != nil {
		t.Errorf("Int(n) = %v, %v", v, err)
	}
	if v, err := o.Int("absent", -7); v != -7 || err != nil {
		t.Errorf("Int(absent) = %v, %v", v, err)
	}
	if v, err := o.Uint("n", 0); v != 1<<64-1 || err != nil {
		t.Errorf("Uint(n) = %v, %v", v, err)
	}
	if v, err := o.Size("z", 0); v != 1536 || err != nil {
		t.Errorf("Size(z) = %v, %v", v, err)
	}
	for name, f := range map[string]func() error{
		"Parameter 'bad' expects 'on' or 'off'":                    func() error { _, err := o.Bool("bad", false); return err },
		"Parameter 'bad' expects a number":                         func() error { _, err := o.Uint("bad", 0); return err },
		"Parameter 'bad' expects a non-negative number below 2^64": func() error { _, err := o.Size("bad", 0); return err },
	} {
		if err := f(); err == nil || err.Error() != name {
			t.Errorf("got %v, want %q", err, name)
		}
	}
}

func FuzzParseOpts(f *testing.F) {
	for _, s := range []string{"", "a=1,,", "fd=3,set=2,opaque=x", "server,nowait", ",", ",,", "=,=", "id=x,id=y", "a=,,,b", "no,noid"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, implied bool) {
		o, err := ParseOpts(s, map[bool]string{true: "backend"}[implied])
		if err != nil {
			return
		}
		_ = o.Validate(map[string]Kind{"id": OptString, "a": OptBool, "b": OptNumber, "c": OptSize})
		again, err := ParseOpts(o.String(), "")
		if err != nil {
			t.Fatalf("ParseOpts(%q) of String() of %q: %v", o.String(), s, err)
		}
		if !reflect.DeepEqual(o, again) {
			t.Fatalf("round trip of %q via %q: %+v became %+v", s, o.String(), o, again)
		}
	})
}
