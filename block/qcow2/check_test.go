package qcow2

import (
	"testing"

	"minivmm/internal/fdtest"
)

// TestCheckRefcountAt reads entries of every refcount width.
func TestCheckRefcountAt(t *testing.T) {
	fdtest.Check(t)
	block := []byte{0xb4, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0}
	cases := []struct {
		order uint32
		i     int64
		want  uint64
	}{
		{0, 0, 0}, {0, 2, 1}, {0, 7, 1}, {0, 6, 0},
		{1, 0, 0}, {1, 1, 1}, {1, 2, 3}, {1, 3, 2},
		{2, 0, 4}, {2, 1, 0xb}, {2, 2, 2},
		{3, 1, 0x12},
		{4, 1, 0x3456},
		{5, 1, 0x789abcde},
		{6, 0, 0xb4123456789abcde},
	}
	for _, c := range cases {
		if got := refcountAt(block, c.order, c.i); got != c.want {
			t.Errorf("order %d entry %d: %#x, want %#x", c.order, c.i, got, c.want)
		}
	}
}
