package cmdline

import (
	"errors"
	"math"
	"testing"
)

func TestParseBool(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
		err  bool
	}{
		{"on", true, false}, {"yes", true, false}, {"true", true, false}, {"y", true, false},
		{"off", false, false}, {"no", false, false}, {"false", false, false}, {"n", false, false},
		{"ON", false, true}, {"", false, true}, {"1", false, true}, {"on ", false, true},
	} {
		got, err := ParseBool(tc.in)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("ParseBool(%q) = %v, %v; want %v, err %v", tc.in, got, err, tc.want, tc.err)
		}
		if tc.err && !errors.Is(err, ErrBool) {
			t.Errorf("ParseBool(%q) error %v is not ErrBool", tc.in, err)
		}
	}
}

func TestParseUint(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		err  error
	}{
		// Checked against QEMU 7.2's QemuOpts numbers (qcow2 refcount_bits).
		{"16", 16, nil}, {"0x10", 16, nil}, {"020", 16, nil}, {" 16", 16, nil}, {"+16", 16, nil},
		{"0", 0, nil}, {"-1", math.MaxUint64, nil}, {"-18446744073709551615", 1, nil},
		{"18446744073709551615", math.MaxUint64, nil},
		{"abc", 0, ErrNumber}, {"", 0, ErrNumber}, {"16x", 0, ErrNumber}, {"0x", 0, ErrNumber},
		{"08", 0, ErrNumber}, {"16 ", 0, ErrNumber}, {"- 1", 0, ErrNumber},
		{"99999999999999999999", 0, ErrTooLarge}, {"-99999999999999999999", 0, ErrTooLarge},
		{"99999999999999999999x", 0, ErrNumber}, // garbage wins over range, as in QEMU
	} {
		got, err := ParseUint(tc.in)
		if got != tc.want || !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
			t.Errorf("ParseUint(%q) = %d, %v; want %d, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseSize(t *testing.T) {
	const k, e = 1024, 1 << 60
	for _, tc := range []struct {
		in   string
		want uint64
		err  error
	}{
		// Each checked against QEMU 7.2 (qemu-img create -o size=...).
		{"1.5G", 1610612736, nil}, {"0x10", 16, nil}, {" 1k", k, nil}, {"\t1k", k, nil},
		{"1k", k, nil}, {"1K", k, nil}, {"1b", 1, nil}, {"1B", 1, nil}, {"1m", k * k, nil},
		{"1g", k * k * k, nil}, {"1t", 1 << 40, nil}, {"1p", 1 << 50, nil}, {"1e", e, nil},
		{"1E", e, nil}, {"15E", 15 * e, nil}, {"0x10k", 16 * k, nil}, {"0x18M", 24 << 20, nil},
		{"0x1E", 30, nil}, {"0x10b", 267, nil}, {"0X1f", 31, nil}, {"+0x10", 16, nil},
		{"1.k", k, nil}, {"1.", 1, nil}, {"1.b", 1, nil}, {"1.0", 1, nil}, {"1.0b", 1, nil},
		{"010", 10, nil}, {"+1", 1, nil}, {"12.345M", 12944671, nil}, {"0.1G", 107374182, nil},
		{"0.3k", 307, nil}, {"0.7k", 717, nil}, {"0.0k", 0, nil}, {"0.001k", 1, nil},
		{"0.000000001E", 1152921505, nil}, {"1.999999999999k", 2048, nil},
		{"1.5e", 1729382256910270464, nil}, {"0.5E", e / 2, nil},
		{"1.00000000000000000001k", k, nil}, {"1.0000000000000000000000000000001b", 1, nil},
		{"0.9999999999999999999k", 0, nil}, {"5.9999999999999999999", 5, nil}, // QEMU drops a fraction that rounds to 1
		{"15.9999999999999999E", math.MaxUint64 - 127, nil},
		{"17179869183.999999999G", math.MaxUint64, nil},
		{"18446744073709551615", math.MaxUint64, nil}, {"0xffffffffffffffff", math.MaxUint64, nil},
		{"16E", 0, ErrOutOfRange}, {"18446744073709551616", 0, ErrOutOfRange},
		{"0x10000000000000000", 0, ErrOutOfRange}, {"-99999999999999999999", 0, ErrOutOfRange},
		{"99999999999999999999k", 0, ErrSize},
		{".5k", 0, ErrSize}, {"1e3", 0, ErrSize}, {"-1", 0, ErrSize}, {"-0", 0, ErrSize},
		{" -0", 0, ErrSize}, {"-0x10", 0, ErrSize}, {"1k ", 0, ErrSize}, {"abc", 0, ErrSize},
		{"", 0, ErrSize}, {" ", 0, ErrSize}, {"1.5", 0, ErrSize}, {"1.5b", 0, ErrSize},
		{"1.5B", 0, ErrSize}, {"0x", 0, ErrSize}, {"1 k", 0, ErrSize}, {"0x1.8", 0, ErrSize},
		{"1.e3", 0, ErrSize}, {"1.5e0k", 0, ErrSize}, {"1.5e+", 0, ErrSize}, {"1.5e+1", 0, ErrSize},
		{"1kk", 0, ErrSize}, {"1k2", 0, ErrSize}, {"00x10", 0, ErrSize}, {"0x0x1", 0, ErrSize},
		{"1..5k", 0, ErrSize}, {"1.5.k", 0, ErrSize}, {"+-1", 0, ErrSize}, {"--1", 0, ErrSize},
		{"1.5KB", 0, ErrSize},
	} {
		got, err := ParseSize(tc.in)
		if got != tc.want || !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParamError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{ErrBool, "Parameter 'wait' expects 'on' or 'off'"},
		{ErrNumber, "Parameter 'wait' expects a number"},
		{ErrSize, "Parameter 'wait' expects a non-negative number below 2^64"},
		{ErrTooLarge, "Value 'v' is too large for parameter 'wait'"},
		{ErrOutOfRange, "Value 'v' is out of range for parameter 'wait'"},
	} {
		err := paramError("wait", "v", tc.err)
		if err.Error() != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("paramError(%v) = %q, want %q wrapping it", tc.err, err, tc.want)
		}
	}
}
