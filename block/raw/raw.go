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
		Name:      "raw",
		Format:    true,
		Options:   map[string]block.OptType{"offset": block.OptSize, "size": block.OptSize},
		Open:      open,
		ChildPerm: childPerm,
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
	offset, err := o.Options.Size("offset", 0)
	if err != nil {
		return nil, err
	}
	fileLen := file.Length()
	size, err := o.Options.Size("size", fileLen-offset)
	if err != nil {
		return nil, err
	}
	if offset > fileLen {
		return nil, fmt.Errorf("Offset (%d) cannot be greater than size of the containing file (%d)", offset, fileLen)
	}
	if _, given := o.Options["size"]; given && size%512 != 0 {
		return nil, errors.New("Specified size is not multiple of 512")
	}
	if size+offset > fileLen || size+offset < 0 {
		return nil, fmt.Errorf("The sum of offset (%d) and size (%d) has to be smaller or equal to the  actual size of the containing file (%d)", offset, size, fileLen)
	}
	_, fixed := o.Options["size"]
	return &image{file: file, offset: offset, size: size, fixed: fixed}, nil
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
func (r *image) PrepareReopen(req *block.ReopenRequest) (block.Pending, error) {
	f := req.Children["file"]
	if f == nil || f == r.file {
		return swap{}, nil
	}
	if l := f.Length(); r.offset+r.size > l {
		return nil, fmt.Errorf("The sum of offset (%d) and size (%d) has to be smaller or equal to the  actual size of the containing file (%d)", r.offset, r.size, l)
	}
	return swap{r: r, file: f}, nil
}

type swap struct {
	r    *image
	file *block.Node
}

func (s swap) Commit() {
	if s.r != nil {
		s.r.file = s.file
	}
}
func (s swap) Abort() {}

// ReadV and WriteV pass vectored requests (and FUA) to the file child.
func (r *image) ReadV(bufs [][]byte, off int64) (int, error) {
	r.file.Event("read_aio")
	return r.file.ReadV(bufs, off+r.offset)
}

func (r *image) WriteV(bufs [][]byte, off int64, flags block.WriteFlags) (int, error) {
	r.file.Event("write_aio")
	return r.file.WriteV(bufs, off+r.offset, flags)
}
