// Package raw is the "raw" format driver: the image is its file child's
// bytes, optionally a window of them (offset, size).
package raw

import (
	"errors"
	"fmt"

	"minivmm/block"
)

func init() {
	block.Register(&block.Driver{
		Name:    "raw",
		Format:  true,
		Options: map[string]block.OptType{"offset": block.OptSize, "size": block.OptSize},
		// The window changes at a reopen (qemu-io's reopen -o offset=,size=).
		Reopenable: []string{"offset", "size"},
		Open:       open,
		ChildPerm:  childPerm,
	})
}

// childPerm is QEMU's raw_child_perm: raw passes its users' permissions
// to its file (a window of it, given offset or size, is guest data that
// others may not resize), and needs write and resize only when they do.
func childPerm(role string, o block.Options, writable bool, perm, shared block.Perms) (block.Perms, block.Perms) {
	offset, _ := o.Size("offset", 0)
	_, sized := o["size"]
	np, ns := perm, shared
	if offset != 0 || sized {
		np, ns = block.StoragePerms(false, true, writable, perm, shared)
	}
	const wr = block.PermWrite | block.PermResize
	return np&^wr | perm&wr, ns
}

type image struct {
	file   *block.Node
	offset int64
	size   int64
	fixed  bool // size given as an option: truncate refuses
}

func open(o *block.OpenContext) (block.Image, error) {
	file := o.Child("file")
	offset, size, fixed, err := window(o.Options, file.Length())
	if err != nil {
		return nil, err
	}
	return &image{file: file, offset: offset, size: size, fixed: fixed}, nil
}

// window reads offset and size over a file of fileLen bytes, as QEMU's
// raw_apply_options checks them.
func window(o block.Options, fileLen int64) (offset, size int64, fixed bool, err error) {
	if offset, err = o.Size("offset", 0); err != nil {
		return
	}
	if size, err = o.Size("size", fileLen-offset); err != nil {
		return
	}
	if offset > fileLen {
		err = fmt.Errorf("Offset (%d) cannot be greater than size of the containing file (%d)", offset, fileLen)
		return
	}
	_, fixed = o["size"]
	if fixed && size%512 != 0 {
		err = errors.New("Specified size is not multiple of 512")
		return
	}
	if size+offset > fileLen || size+offset < 0 {
		err = fmt.Errorf("The sum of offset (%d) and size (%d) has to be smaller or equal to the  actual size of the containing file (%d)", offset, size, fileLen)
	}
	return
}

// Reads and writes tell the file child's blkdebug of them (read_aio,
// write_aio), as QEMU's raw format does: a blkdebug under a raw node (a
// qcow2 data file's, say) sees guest I/O by these events.
func (r *image) ReadAt(p []byte, off int64) (int, error) {
	r.file.Event("read_aio")
	return r.file.ReadAt(p, off+r.offset)
}

func (r *image) WriteAt(p []byte, off int64) (int, error) {
	r.file.Event("write_aio")
	return r.file.WriteAt(p, off+r.offset)
}

func (r *image) Flush() error           { return r.file.Flush() }
func (r *image) Length() (int64, error) { return r.size, nil }
func (r *image) Close() error           { return nil }

func (r *image) WriteZeroes(off, n int64, unmap bool) error {
	return r.file.WriteZeroes(off+r.offset, n, unmap)
}

func (r *image) Discard(off, n int64) error { return r.file.Discard(off+r.offset, n) }

// BlockStatus is the file's, seen through the window; raw adds nothing of
// its own, so data is reported at depth 0 as QEMU's raw does.
func (r *image) BlockStatus(off, n int64) (block.Status, int64, error) {
	st, l, err := r.file.BlockStatus(off+r.offset, n)
	if st.Offset >= 0 {
		st.Offset = off + r.offset
	}
	return st, l, err
}

func (r *image) Filename() string { return r.file.Filename() }

func (r *image) ActualSize() (int64, error) {
	if size := r.file.Info().ActualSize; size >= 0 {
		return size, nil
	}
	return 0, block.ErrNotSupported
}

// DirtyFlag: a raw image has no dirty flag to set; it is never dirty.
func (r *image) DirtyFlag() bool { return false }

// PrepareReopen takes the file child the reopen names, which must still
// hold the window; it is read from at Commit on.
// The window (offset, size) is read again from the reopen's options, as
// QEMU's raw_reopen_prepare does.
func (r *image) PrepareReopen(req *block.ReopenRequest) (block.Pending, error) {
	f := req.Children["file"]
	if f == nil {
		f = r.file
	}
	offset, size, fixed, err := window(req.Options, f.Length())
	if err != nil {
		return nil, err
	}
	return swap{r: r, file: f, offset: offset, size: size, fixed: fixed}, nil
}

type swap struct {
	r            *image
	file         *block.Node
	offset, size int64
	fixed        bool
}

func (s swap) Commit() {
	s.r.file, s.r.offset, s.r.size, s.r.fixed = s.file, s.offset, s.size, s.fixed
}
func (s swap) Abort() {}

// NewLength is the node's length after the reopen (block.Resizer).
func (s swap) NewLength() (int64, bool) { return s.size, true }

// ReadV and WriteV pass vectored requests (and FUA) to the file child.
func (r *image) ReadV(bufs [][]byte, off int64) (int, error) {
	r.file.Event("read_aio")
	return r.file.ReadV(bufs, off+r.offset)
}

func (r *image) WriteV(bufs [][]byte, off int64, flags block.WriteFlags) (int, error) {
	r.file.Event("write_aio")
	return r.file.WriteV(bufs, off+r.offset, flags)
}
