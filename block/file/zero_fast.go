package file

import (
	"golang.org/x/sys/unix"

	"minivmm/block"
)

// WriteZeroesFast is WriteZeroes for a regular file, which only ever
// asks the host to zero (fallocate) and never writes a buffer. A block
// device is different: its ZERO_RANGE may have the kernel write zeroes,
// while its PUNCH_HOLE never falls back (BLKDEV_ZERO_NOFALLBACK), so
// only an unmapping request is fast there, as in QEMU, which keeps
// BLKZEROOUT away from no-fallback requests for the same reason.
func (img *image) WriteZeroesFast(off, n int64, unmap bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(img.fd, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
		if !unmap {
			return block.ErrNotSupported
		}
		return img.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	}
	return img.WriteZeroes(off, n, unmap)
}
