package faultdisk

import (
	"errors"

	"golang.org/x/sys/unix"

	"minivmm/block"
)

// Driver returns a protocol driver named name whose nodes all open d. It
// takes one option, "filename": what the node reports as its file name
// (so that a qcow2 image's relative backing file name is found next to
// it); without it the name is "faultdisk:" and the driver's name.
func (d *Disk) Driver(name string) *block.Driver {
	return &block.Driver{
		Name:    name,
		Options: map[string]block.OptType{"filename": block.OptString},
		Open: func(o *block.OpenContext) (block.Image, error) {
			filename, err := o.Options.String("filename", "faultdisk:"+name)
			if err != nil {
				return nil, err
			}
			return &image{d: d, filename: filename, writable: o.Writable}, nil
		},
	}
}

// Install adds d's driver to g under name (see [block.Graph.AddDriver]):
// nodes of g with "driver": name open d.
func (d *Disk) Install(g *block.Graph, name string) error {
	return g.AddDriver(d.Driver(name))
}

// image is one node open on a disk; several may share one, as several
// fds share a file.
type image struct {
	d        *Disk
	filename string
	writable bool // changed only in a reopen commit, under the node's exclusive lock
}

var _ interface {
	block.Image
	block.ZeroWriter
	block.Discarder
	block.Truncater
	block.Reopener
	block.Filenamer
} = (*image)(nil)

func (img *image) ReadAt(p []byte, off int64) (int, error) {
	if err := img.d.readAt(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteAt writes p; a node opened read-only fails as a write to an
// O_RDONLY fd does.
func (img *image) WriteAt(p []byte, off int64) (int, error) {
	if !img.writable {
		return 0, unix.EBADF
	}
	if err := img.d.writeAt(Write, p, off, int64(len(p)), false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteZeroes with unmap punches a hole (space is given back), without
// it allocates zeroes, as fallocate does for the file driver.
func (img *image) WriteZeroes(off, n int64, unmap bool) error {
	if !img.writable {
		return unix.EBADF
	}
	return img.d.writeAt(WriteZeroes, nil, off, n, unmap)
}

// Discard punches a hole: the range reads as zeroes.
func (img *image) Discard(off, n int64) error {
	if !img.writable {
		return unix.EBADF
	}
	return img.d.writeAt(Discard, nil, off, n, true)
}

func (img *image) Flush() error { return img.d.flush() }

func (img *image) Truncate(size int64) error {
	if !img.writable {
		return unix.EINVAL // ftruncate of an O_RDONLY fd
	}
	if size < 0 {
		return unix.EINVAL
	}
	return img.d.truncate(size)
}

func (img *image) Length() (int64, error) { return img.d.Size(), nil }

func (img *image) Close() error { return nil }

func (img *image) Filename() string { return img.filename }

// PrepareReopen changes the access mode; the disk stays the same.
func (img *image) PrepareReopen(r *block.ReopenRequest) (block.Pending, error) {
	if name, _ := r.Options.String("filename", img.filename); name != img.filename {
		return nil, errors.New("Cannot change the option 'filename'")
	}
	return &reopen{img: img, writable: r.Writable}, nil
}

type reopen struct {
	img      *image
	writable bool
}

func (r *reopen) Commit() { r.img.writable = r.writable }
func (r *reopen) Abort()  {}
