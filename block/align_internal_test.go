package block

import "testing"

// TestAlignNonPowerOfTwo: discard and write-zeroes alignments need not be
// powers of two (blkdebug's opt-discard=15M in QEMU's iotest 177); a
// mask would round 15M down to 1M and cut every discard into 1M pieces
// no cluster fits in.
func TestAlignNonPowerOfTwo(t *testing.T) {
	const m = 1 << 20
	for _, c := range []struct{ x, a, down, up int64 }{
		{15 * m, 15 * m, 15 * m, 15 * m},
		{80000001, 15 * m, 75 * m, 90 * m},
		{4097, 4096, 4096, 8192},
		{0, 3, 0, 0},
	} {
		if d, u := alignDown(c.x, c.a), alignUp(c.x, c.a); d != c.down || u != c.up {
			t.Errorf("align(%d, %d) = %d, %d; want %d, %d", c.x, c.a, d, u, c.down, c.up)
		}
	}
}
