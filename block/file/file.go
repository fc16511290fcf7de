// Package file is the "file" protocol driver: a host file or block device
// opened through qemu_open (so /dev/fdset/N works, and -fdset-only holds),
// read and written with pread/pwrite, O_DIRECT with aligned bounce
// buffers, discard as punched holes and block status from SEEK_DATA.
package file

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/qemuopen"
)

func init() {
	block.Register(&block.Driver{
		Name: "file",
		Options: map[string]block.OptType{
			"filename": block.OptString, "aio": block.OptString, "locking": block.OptString,
			"aio-max-batch": block.OptInt, "drop-cache": block.OptBool,
		},
		Required: []string{"filename"},
		Weak:     []string{"aio", "aio-max-batch", "drop-cache", "locking"},
		Open:     open,
	})
}

type image struct {
	files    *qemuopen.Registry
	driver   string // file, host_device or host_cdrom (hostdevice.go)
	filename string
	fd       int
	flags    int
	align    int // request alignment: 1, or the O_DIRECT alignment
	locks    imageLocks
	eng      engine // aio=native, io_uring; nil: threads

	// rmw serializes read-modify-write cycles of unaligned O_DIRECT writes
	// against every other write, so that two writes sharing a block do
	// not undo each other.
	rmw sync.RWMutex
}

func open(o *block.OpenContext) (block.Image, error) { return openAs(o, "file", engineHooks{}) }

// openWith is the file driver's open with the engine's test hooks.
func openWith(o *block.OpenContext, hooks engineHooks) (block.Image, error) {
	return openAs(o, "file", hooks)
}

// openAs opens for driver (file, host_device, host_cdrom).
func openAs(o *block.OpenContext, driver string, hooks engineHooks) (block.Image, error) {
	filename, err := o.Options.String("filename", "")
	if err != nil {
		return nil, err
	}
	if filename == "" {
		return nil, errors.New("The 'file' block driver requires a file name")
	}
	aio, err := checkAIO(o.Options, o.Direct)
	if err != nil {
		return nil, err
	}
	maxBatch, err := o.Options.Int("aio-max-batch", 0)
	if err != nil {
		return nil, err
	}
	for key, allowed := range map[string][]string{"locking": {"auto", "on", "off"}} {
		if v, err := o.Options.String(key, allowed[0]); err != nil {
			return nil, err
		} else if !contains(allowed, v) {
			return nil, fmt.Errorf("Parameter '%s' does not accept value '%s'", key, v)
		}
	}
	img := &image{files: o.Files, driver: driver, filename: filename}
	fd, flags, align, err := img.openFd(o.Writable, o.Direct)
	if err != nil {
		return nil, err
	}
	img.fd, img.flags, img.align = fd, flags, align
	mode, _ := o.Options.String("locking", "auto")
	if err := img.lockOpen(mode); err != nil {
		img.files.Close(fd)
		return nil, err
	}
	if img.eng, err = newEngine(aio, int(maxBatch), hooks); err != nil {
		img.unlock()
		img.files.Close(fd)
		return nil, err
	}
	return img, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// openFd opens the image with the access mode and O_DIRECT asked for.
func (img *image) openFd(writable, direct bool) (fd, flags, align int, err error) {
	flags = unix.O_RDONLY
	if writable {
		flags = unix.O_RDWR
	}
	if direct {
		flags |= unix.O_DIRECT
	}
	// O_NONBLOCK: opening a FIFO without a writer would block forever
	// (QEMU's does); whatever is not a file or a block device is refused
	// below, and the flag cleared on what is.
	fd, err = img.files.Open(img.filename, flags|unix.O_NONBLOCK)
	if direct && errors.Is(err, unix.EINVAL) {
		return -1, 0, 0, &qemuopen.Error{Path: img.filename, Errno: unix.EINVAL,
			Msg: fmt.Sprintf("Could not open '%s': filesystem does not support O_DIRECT", img.filename)}
	}
	if err != nil {
		return -1, 0, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err == nil {
		if err := img.checkType(st.Mode & unix.S_IFMT); err != nil {
			img.files.Close(fd)
			return -1, 0, 0, err
		}
	}
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil && fl&unix.O_NONBLOCK != 0 && !strings.HasPrefix(img.filename, qemuopen.FdsetPrefix) {
		unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
	}
	align = 1
	if direct {
		align = probeAlignment(fd)
	}
	return fd, flags, align, nil
}

// probeAlignment finds the smallest request size O_DIRECT accepts on fd:
// the kernel's answer where it gives one (statx DIOALIGN), else the first
// of 512..4096 that a read takes.
func probeAlignment(fd int) int {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx); err == nil &&
		stx.Mask&unix.STATX_DIOALIGN != 0 && stx.Dio_offset_align > 0 {
		return int(max(stx.Dio_offset_align, stx.Dio_mem_align))
	}
	buf := alignedBuffer(4096, 4096)
	for size := 512; size <= 4096; size *= 2 {
		if _, err := unix.Pread(fd, buf[:size], 0); err != unix.EINVAL {
			return size
		}
	}
	return 4096
}

// alignedBuffer returns n bytes whose address is a multiple of align.
func alignedBuffer(n, align int) []byte {
	raw := make([]byte, n+align)
	shift := (align - int(uintptr(unsafe.Pointer(&raw[0])))%align) % align
	return raw[shift : shift+n]
}

func (img *image) aligned(p []byte, off int64) bool {
	a := img.align
	return a == 1 || off%int64(a) == 0 && len(p)%a == 0 && (len(p) == 0 || uintptr(unsafe.Pointer(&p[0]))%uintptr(a) == 0)
}

// pread reads all of p at off; past the end of the file it fills zeroes
// (an O_DIRECT bounce may reach beyond a file whose size is unaligned).
func pread(fd int, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := unix.Pread(fd, p, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			clear(p)
			return nil
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func pwrite(fd int, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := unix.Pwrite(fd, p, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// bounce returns an aligned buffer covering [off, off+n) and its start.
func (img *image) bounce(off int64, n int) ([]byte, int64) {
	a := int64(img.align)
	start := off / a * a
	end := (off + int64(n) + a - 1) / a * a
	return alignedBuffer(int(end-start), img.align), start
}

func (img *image) ReadAt(p []byte, off int64) (int, error) {
	if img.aligned(p, off) {
		if err := img.readAt(p, off); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	buf, start := img.bounce(off, len(p))
	if err := pread(img.fd, buf, start); err != nil {
		return 0, err
	}
	copy(p, buf[off-start:])
	return len(p), nil
}

func (img *image) WriteAt(p []byte, off int64) (int, error) {
	if img.aligned(p, off) {
		img.rmw.RLock()
		err := img.writeAt(p, off)
		img.rmw.RUnlock()
		if err != nil {
			return 0, err
		}
		return len(p), nil
	}
	img.rmw.Lock()
	defer img.rmw.Unlock()
	buf, start := img.bounce(off, len(p))
	if err := pread(img.fd, buf, start); err != nil {
		return 0, err
	}
	copy(buf[off-start:], p)
	// Never write past the end of the file: the bounce's tail is padding.
	size, err := img.Length()
	if err != nil {
		return 0, err
	}
	if start+int64(len(buf)) > size {
		// The file ends inside the last block: O_DIRECT cannot write a
		// partial block, so the write extends the file; trim it back.
		defer unix.Ftruncate(img.fd, size)
	}
	if err := pwrite(img.fd, buf, start); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (img *image) Flush() error { return img.fdatasync() }

func (img *image) Length() (int64, error) {
	return unix.Seek(img.fd, 0, io.SeekEnd)
}

// Close releases the fd's locks, closes it and forgets its number, which
// the next open may reuse: a stray call after Close fails with EBADF
// instead of reaching another image.
func (img *image) Close() error {
	engErr := img.closeEngine()
	img.unlock()
	err := img.files.Close(img.fd)
	img.fd = -1
	if engErr != nil {
		return engErr
	}
	return err
}

func (img *image) fallocate(mode uint32, off, n int64) error {
	err := unix.Fallocate(img.fd, mode, off, n)
	if err == unix.EOPNOTSUPP || err == unix.ENOSYS || err == unix.EINVAL {
		return block.ErrNotSupported
	}
	return err
}

// WriteZeroes punches a hole where unmapping is allowed (reads then return
// zeroes), else zeroes the range in place, keeping it allocated.
func (img *image) WriteZeroes(off, n int64, unmap bool) error {
	if unmap {
		if err := img.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err == nil {
			return nil
		}
	}
	return img.fallocate(unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

func (img *image) Discard(off, n int64) error {
	return img.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

// BlockStatus: a protocol node holds everything it has, so every range is
// allocated; holes read as zeroes.
func (img *image) BlockStatus(off, n int64) (block.Status, int64, error) {
	data, err := unix.Seek(img.fd, off, unix.SEEK_DATA)
	switch {
	case err == unix.ENXIO: // nothing but hole from off to the end
		return block.Status{Zero: true, Allocated: true, Offset: off}, n, nil
	case err != nil: // no SEEK_DATA here: say data
		return block.Status{Data: true, Allocated: true, Offset: off}, n, nil
	case data > off:
		return block.Status{Zero: true, Allocated: true, Offset: off}, min(n, data-off), nil
	}
	hole, err := unix.Seek(img.fd, off, unix.SEEK_HOLE)
	if err != nil || hole <= off {
		return block.Status{Data: true, Allocated: true, Offset: off}, n, nil
	}
	return block.Status{Data: true, Allocated: true, Offset: off}, min(n, hole-off), nil
}

func (img *image) Truncate(size int64) error { return unix.Ftruncate(img.fd, size) }

// PrepareReopen opens the fd the new access mode and O_DIRECT need (on an
// fdset: picks the set's other fd); the old one is closed at commit.
func (img *image) PrepareReopen(r *block.ReopenRequest) (block.Pending, error) {
	if name, _ := r.Options.String("filename", img.filename); name != img.filename {
		return nil, errors.New("Cannot change the option 'filename'")
	}
	want := unix.O_RDONLY
	if r.Writable {
		want = unix.O_RDWR
	}
	if r.Direct {
		want |= unix.O_DIRECT
	}
	next := lockSetOf(r.Perm, r.Shared)
	if want == img.flags {
		return img.PreparePerm(r.Perm, r.Shared)
	}
	fd, flags, align, err := img.openFd(r.Writable, r.Direct)
	if err != nil {
		return nil, err
	}
	rl, err := img.prepareLocks(next, fd)
	if err != nil {
		img.files.Close(fd)
		return nil, err
	}
	return &reopened{img: img, fd: fd, flags: flags, align: align, locks: rl}, nil
}

type noChange struct{}

func (noChange) Commit() {}
func (noChange) Abort()  {}

type reopened struct {
	img       *image
	fd, flags int
	align     int
	locks     *relock // nil: locking is off
}

// Commit runs under the node's exclusive lock: no request is using the
// old fd when it is closed.
func (r *reopened) Commit() {
	old := r.img.fd
	r.img.commitLocks(r.locks) // releases the old fd's locks
	r.img.fd, r.img.flags, r.img.align = r.fd, r.flags, r.align
	r.img.files.Close(old)
}

func (r *reopened) Abort() {
	if r.locks != nil {
		r.locks.abort() // releases the new fd's locks
	}
	r.img.files.Close(r.fd)
}

func (img *image) Filename() string { return img.filename }

func (img *image) ActualSize() (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(img.fd, &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}

// DirtyFlag: a plain file image has no dirty flag to set; it is never dirty.
func (img *image) DirtyFlag() bool { return false }
