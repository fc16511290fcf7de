package block

import "testing"

// Sizes as QEMU's qemu_strtosz takes them in keyval options (iotest 103
// gives cache-size=1.25M): fractions with a suffix, rounded half up.
func TestParseKeyvalSizeFraction(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1.25M", 1310720, true},
		{"0.25M", 262144, true},
		{"1.M", 1 << 20, true},
		{"1.5k", 1536, true},
		{"0.5", 0, false}, // a fraction needs a suffix
		{"1.0", 1, true},  // as QEMU: a zero fraction does not
		{".5M", 0, false},
		{"1.5e3k", 0, false},
		{"0x1.8M", 0, false},
		{"-1.5M", 0, false},
		{"8388608.5T", 0, false}, // past 2^63
		{"1.3333333333333333k", 1365, true},
	} {
		got, err := parseKeyvalNumber(tc.in, true)
		if tc.ok != (err == nil) || tc.ok && got != tc.want {
			t.Errorf("parseKeyvalNumber(%q) = %d, %v; want %d (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseKeyvalSize(f *testing.F) {
	for _, s := range []string{"1.25M", "0.5", "1k", "0x10", ".5M", "9.9E"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseKeyvalNumber(s, true)
		if err == nil && n < 0 && len(s) > 0 && s[0] != '-' {
			t.Fatalf("%q parsed to %d", s, n)
		}
	})
}
