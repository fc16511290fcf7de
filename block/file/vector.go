package file

import (
	"golang.org/x/sys/unix"

	"minivmm/block"
)

// ReadV reads into bufs with preadv, straight into the caller's buffers
// (guest memory) where O_DIRECT's alignment allows, else through one
// aligned bounce buffer.
func (img *image) ReadV(bufs [][]byte, off int64) (int, error) {
	total := vlen(bufs)
	if !img.alignedV(bufs, off) {
		buf, start := img.bounce(off, total)
		if err := pread(img.fd, buf, start); err != nil {
			return 0, err
		}
		scatter(bufs, buf[off-start:])
		return total, nil
	}
	if err := img.readAligned(bufs, off); err != nil {
		return 0, err
	}
	return total, nil
}

// WriteV writes bufs with pwritev; with FUA, pwritev2(RWF_DSYNC) makes
// this write alone durable where the kernel has it, else pwritev and
// fdatasync. Unaligned O_DIRECT writes go through WriteAt's
// read-modify-write.
func (img *image) WriteV(bufs [][]byte, off int64, flags block.WriteFlags) (int, error) {
	total := vlen(bufs)
	if !img.alignedV(bufs, off) {
		buf := make([]byte, total)
		gather(buf, bufs)
		if _, err := img.WriteAt(buf, off); err != nil {
			return 0, err
		}
		if flags&block.FUA != 0 {
			if err := img.Flush(); err != nil {
				return 0, err
			}
		}
		return total, nil
	}
	img.rmw.RLock()
	defer img.rmw.RUnlock()
	if err := img.writeAligned(bufs, off, flags&block.FUA != 0); err != nil {
		return 0, err
	}
	return total, nil
}

func vlen(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}

func (img *image) alignedV(bufs [][]byte, off int64) bool {
	for _, b := range bufs {
		if !img.aligned(b, off) {
			return false
		}
		off += int64(len(b))
	}
	return true
}

// cloneVec copies the list (not the bytes), which preadv/pwritev consume
// as they advance.
func cloneVec(bufs [][]byte) [][]byte {
	out := make([][]byte, 0, len(bufs))
	for _, b := range bufs {
		if len(b) > 0 {
			out = append(out, b)
		}
	}
	return out
}

// advance drops n bytes from the front of bufs.
func advance(bufs [][]byte, n int) [][]byte {
	for n > 0 && len(bufs) > 0 {
		if n < len(bufs[0]) {
			bufs[0] = bufs[0][n:]
			return bufs
		}
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	return bufs
}

// preadv fills bufs from off; past the end of the file, with zeroes.
func preadv(fd int, bufs [][]byte, off int64) error {
	for len(bufs) > 0 {
		n, err := unix.Preadv(fd, bufs, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			for _, b := range bufs {
				clear(b)
			}
			return nil
		}
		bufs, off = advance(bufs, n), off+int64(n)
	}
	return nil
}

func pwritev(fd int, bufs [][]byte, off int64, rwf int) error {
	for len(bufs) > 0 {
		var n int
		var err error
		if rwf != 0 {
			n, err = unix.Pwritev2(fd, bufs, off, rwf)
		} else {
			n, err = unix.Pwritev(fd, bufs, off)
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		bufs, off = advance(bufs, n), off+int64(n)
	}
	return nil
}

func scatter(bufs [][]byte, src []byte) {
	for _, b := range bufs {
		src = src[copy(b, src):]
	}
}

func gather(dst []byte, bufs [][]byte) {
	for _, b := range bufs {
		dst = dst[copy(dst, b):]
	}
}
