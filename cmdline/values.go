package cmdline

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// The value parsers return these. Their texts are the tails of QEMU's
// messages, so that a caller naming the parameter (see paramError) gets
// QEMU's full text.
var (
	ErrBool       = errors.New("expects 'on' or 'off'")
	ErrNumber     = errors.New("expects a number")
	ErrSize       = errors.New("expects a non-negative number below 2^64")
	ErrTooLarge   = errors.New("is too large")
	ErrOutOfRange = errors.New("is out of range")
)

// paramError names the parameter the way QEMU's QemuOpts does.
func paramError(key, value string, err error) error {
	if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrOutOfRange) {
		return fmt.Errorf("Value '%s' %w for parameter '%s'", value, err, key)
	}
	return fmt.Errorf("Parameter '%s' %w", key, err)
}

// ParseBool parses a boolean option value. QEMU 7.2 accepts these
// spellings, case-sensitively, everywhere it parses a bool.
func ParseBool(s string) (bool, error) {
	switch s {
	case "on", "yes", "true", "y":
		return true, nil
	case "off", "no", "false", "n":
		return false, nil
	}
	return false, ErrBool
}

// ParseUint parses a QemuOpts number: C's strtoull with base 0 over the
// whole string, so "0x10", "010" (octal) and " 3" are accepted and "-1"
// wraps to 2^64-1 (callers that want a signed value rely on that).
func ParseUint(s string) (uint64, error) {
	n, rest, ok, over := strtou64(s, 0)
	switch {
	case !ok || rest != "":
		return 0, ErrNumber
	case over:
		return 0, ErrTooLarge
	}
	return n, nil
}

// ParseSize parses a byte count like QEMU 7.2's qemu_strtosz: a decimal
// number with an optional fraction and an optional suffix B, K, M, G, T,
// P or E (any case, powers of 1024). A fraction needs a suffix other
// than B and is rounded to the nearest byte. Hexadecimal (0x...) is
// accepted without a fraction. Negative numbers are refused, and values
// of 2^64 or more give ErrOutOfRange.
func ParseSize(s string) (uint64, error) {
	n, rest, ok, over := strtou64(s, 10)
	if !ok || (!over && strings.Contains(s[:len(s)-len(rest)], "-")) {
		return 0, ErrSize
	}
	hex := !over && n == 0 && rest != "" && rest[0]|0x20 == 'x'
	if hex {
		n, rest, _, over = strtou64(s, 16)
	}
	if over {
		// QEMU checks for trailing garbage before it reports the range.
		if rest != "" {
			return 0, ErrSize
		}
		return 0, ErrOutOfRange
	}
	var frac float64
	if strings.HasPrefix(rest, ".") {
		end := 1
		for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
			end++
		}
		digits := rest[1:end]
		rest = rest[end:]
		if hex || hasExponent(rest) {
			return 0, ErrSize
		}
		if digits != "" {
			frac, _ = strconv.ParseFloat("0."+digits, 64)
		}
	}
	mul := uint64(1)
	if rest != "" {
		if m := suffixMul(rest[0]); m != 0 {
			mul, rest = m, rest[1:]
		}
	}
	if rest != "" {
		return 0, ErrSize
	}
	// QEMU scales the fraction as 64-bit fixed point. One that rounds to
	// 1.0 in float64 (".99999999999999999999") overflows QEMU's float
	// conversion, which yields 0 on x86-64: drop it the same way, so that
	// a size means here what it means to QEMU.
	var valf uint64
	if frac < 1 {
		valf = uint64(frac * 0x1p64)
	}
	if mul == 1 && valf != 0 {
		return 0, ErrSize
	}
	fhi, flo := bits.Mul64(valf, mul)
	hi, lo := bits.Mul64(n, mul)
	lo, c1 := bits.Add64(lo, fhi, 0)
	lo, c2 := bits.Add64(lo, flo>>63, 0) // round half up
	if hi+c1+c2 != 0 {
		return 0, ErrOutOfRange
	}
	return lo, nil
}

// hasExponent tells whether strtod would have read s as an exponent.
func hasExponent(s string) bool {
	if s == "" || s[0]|0x20 != 'e' {
		return false
	}
	s = s[1:]
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	return s != "" && s[0] >= '0' && s[0] <= '9'
}

func suffixMul(c byte) uint64 {
	if i := strings.IndexByte("BKMGTPE", c&^0x20); i >= 0 {
		return 1 << (10 * i)
	}
	return 0
}

// strtou64 reads an unsigned integer as C's strtoull does: leading white
// space, an optional sign (minus negates modulo 2^64) and, for base 0, a
// 0x or 0 prefix choosing the base. ok is false when no digit was read;
// over reports that the magnitude does not fit in 64 bits.
func strtou64(s string, base int) (n uint64, rest string, ok, over bool) {
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	neg := t != "" && t[0] == '-'
	if t != "" && (t[0] == '+' || t[0] == '-') {
		t = t[1:]
	}
	switch {
	case (base == 0 || base == 16) && len(t) > 2 && t[0] == '0' && t[1]|0x20 == 'x' && digit(t[2]) < 16:
		t, base = t[2:], 16
	case base == 0 && t != "" && t[0] == '0':
		base = 8
	case base == 0:
		base = 10
	}
	i := 0
	for ; i < len(t) && digit(t[i]) < base; i++ {
		hi, lo := bits.Mul64(n, uint64(base))
		lo, c := bits.Add64(lo, uint64(digit(t[i])), 0)
		over = over || hi != 0 || c != 0
		n = lo
	}
	switch {
	case i == 0:
		return 0, s, false, false
	case over:
		return math.MaxUint64, t[i:], true, true
	case neg:
		n = -n
	}
	return n, t[i:], true, false
}

func digit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c|0x20 >= 'a' && c|0x20 <= 'z':
		return int(c|0x20-'a') + 10
	}
	return 36
}
