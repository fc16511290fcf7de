package file

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/qemuopen"
)

// checkAIO takes the aio option as QEMU 7.2 on Linux (built with
// linux-aio and io_uring, as Debian's is) does: threads, native (which
// requires cache.direct=on, in QEMU's words) or io_uring.
func checkAIO(o block.Options, direct bool) (string, error) {
	aio, err := o.String("aio", "threads")
	if err != nil {
		return "", err
	}
	switch aio {
	case "threads", "io_uring":
		return aio, nil
	case "native":
		if !direct {
			return "", errors.New("aio=native was specified, but it requires cache.direct=on, which was not specified.")
		}
		return aio, nil
	}
	return "", fmt.Errorf("Parameter 'aio' does not accept value '%s'", aio)
}

// SetupError is the kernel refusing an engine at open, rendered as QEMU
// renders it ("Unable to use io_uring: failed to init linux io_uring
// ring: Operation not permitted").
type SetupError struct {
	Mode  string // "native", "io_uring"
	Errno unix.Errno
}

func (e *SetupError) Error() string {
	if e.Mode == "native" {
		return "Unable to use native AIO: failed to create linux AIO context: " + qemuopen.Strerror(e.Errno)
	}
	return "Unable to use io_uring: failed to init linux io_uring ring: " + qemuopen.Strerror(e.Errno)
}

func (e *SetupError) Unwrap() error { return e.Errno }

func setupError(mode string, err error) error {
	errno, ok := err.(unix.Errno)
	if !ok {
		errno = unix.EINVAL
	}
	return &SetupError{Mode: mode, Errno: errno}
}

// engineHooks inject failures into the engines' system calls (tests);
// the zero value makes the real ones.
type engineHooks struct {
	uring uringSys
	laio  laioSys
}

// newEngine sets up the kernel interface mode names (none for threads),
// failing as QEMU's open does when the kernel refuses it. maxBatch is
// aio-max-batch, which QEMU 7.2 applies to Linux AIO's io_submit only.
func newEngine(mode string, maxBatch int, h engineHooks) (engine, error) {
	switch mode {
	case "native":
		l, err := newLaio(h.laio, maxBatch)
		if err != nil {
			return nil, err
		}
		return l, nil
	case "io_uring":
		u, err := newUring(h.uring)
		if err != nil {
			return nil, err
		}
		return u, nil
	}
	return nil, nil
}

// The node's reads, writes and flushes of aligned buffers: through its
// engine where it has one, else system calls on the caller's goroutine.
// (Unaligned O_DIRECT requests take the bounce path, whose system calls
// stay on the caller, as QEMU sends misaligned requests to its thread
// pool whatever the aio mode.)

// readAt and writeAt are the one-buffer forms, which allocate nothing
// with aio=threads.
func (img *image) readAt(p []byte, off int64) error {
	if img.eng == nil || len(p) == 0 {
		return pread(img.fd, p, off)
	}
	return img.eng.readv(img.fd, [][]byte{p}, off)
}

func (img *image) writeAt(p []byte, off int64) error {
	if img.eng == nil || len(p) == 0 {
		return pwrite(img.fd, p, off)
	}
	return img.writeAligned([][]byte{p}, off, false)
}

func (img *image) readAligned(bufs [][]byte, off int64) error {
	if img.eng == nil || vlen(bufs) == 0 {
		return preadv(img.fd, cloneVec(bufs), off)
	}
	return img.eng.readv(img.fd, bufs, off)
}

// writeAligned writes bufs at off; with dsync, durably (RWF_DSYNC, or
// write then fdatasync where the kernel does not take the flag).
func (img *image) writeAligned(bufs [][]byte, off int64, dsync bool) error {
	write := func(dsync bool) error {
		if img.eng != nil && vlen(bufs) > 0 {
			return img.eng.writev(img.fd, bufs, off, dsync)
		}
		rwf := 0
		if dsync {
			rwf = unix.RWF_DSYNC
		}
		return pwritev(img.fd, cloneVec(bufs), off, rwf)
	}
	err := write(dsync)
	if dsync && (err == unix.EOPNOTSUPP || err == unix.ENOSYS) {
		if err = write(false); err == nil {
			err = img.Flush()
		}
	}
	return err
}

func (img *image) fdatasync() error {
	if img.eng != nil {
		return img.eng.fdatasync(img.fd)
	}
	for {
		err := unix.Fdatasync(img.fd)
		if err != unix.EINTR {
			return err
		}
	}
}

// closeEngine drains the engine and frees its kernel context; the node's
// fd is still open.
func (img *image) closeEngine() error {
	if img.eng == nil {
		return nil
	}
	err := img.eng.close()
	img.eng = nil
	return err
}
