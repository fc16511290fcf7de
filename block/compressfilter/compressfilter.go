// Package compressfilter is QEMU's "compress" filter driver: a node over
// a format that stores compressed clusters (qcow2), through which every
// write is a compressed write. Its request alignment is the child's
// cluster size, so the generic layer pads a write to whole clusters (a
// read-modify-write of the clusters it starts and ends in) before the
// filter passes it down one cluster at a time.
package compressfilter

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/qcow2"
)

// Name is the driver's name, as QEMU's.
const Name = "compress"

func init() {
	block.Register(&block.Driver{
		Name:     Name,
		Format:   true,
		Filtered: "file",
		Open:     open,
		// QEMU's bdrv_default_perms for a filtered child: what the
		// filter's users need, passed through.
		ChildPerm: func(_ string, _ block.Options, _ bool, perm, shared block.Perms) (block.Perms, block.Perms) {
			return perm, shared
		},
	})
}

type image struct {
	child       *block.Node
	clusterSize int64
}

func open(o *block.OpenContext) (block.Image, error) {
	child := o.Child("file")
	cs := child.ClusterSize()
	if cs <= 0 {
		return nil, fmt.Errorf("Compression is not supported for underlying format: %s", child.Driver())
	}
	return &image{child: child, clusterSize: cs}, nil
}

// RefreshLimits is QEMU's compress_refresh_limits: requests come in
// whole clusters of the child.
func (f *image) RefreshLimits(l *block.Limits) { l.RequestAlignment = f.clusterSize }

// WriteAt writes p, whole clusters (the generic layer padded it), each
// compressed. A cluster the child has already allocated cannot be
// written compressed: Input/output error, as QEMU's qcow2 answers.
func (f *image) WriteAt(p []byte, off int64) (int, error) {
	cs := f.clusterSize
	for pos := int64(0); pos < int64(len(p)); pos += cs {
		chunk := p[pos:min(pos+cs, int64(len(p)))]
		if int64(len(chunk)) < cs {
			// The image's last cluster, cut short by its end: the
			// format stores whole clusters, padded with zeroes.
			padded := make([]byte, cs)
			copy(padded, chunk)
			chunk = padded
		}
		if err := f.child.WriteCompressed(chunk, off+pos); err != nil {
			if errors.Is(err, qcow2.ErrCompressedTarget) {
				return int(pos), unix.EIO
			}
			return int(pos), err
		}
	}
	return len(p), nil
}

func (f *image) ReadAt(p []byte, off int64) (int, error) { return f.child.ReadAt(p, off) }
func (f *image) Flush() error                            { return f.child.Flush() }
func (f *image) Length() (int64, error)                  { return f.child.Length(), nil }
func (f *image) Close() error                            { return nil }

// Zeroes and discards are not data: they pass as they are (QEMU's
// compress_co_pwrite_zeroes, compress_co_pdiscard).
func (f *image) WriteZeroes(off, n int64, unmap bool) error {
	return f.child.WriteZeroes(off, n, unmap)
}

func (f *image) WriteZeroesFast(off, n int64, unmap bool) error {
	return f.child.WriteZeroesFast(off, n, unmap)
}

func (f *image) Discard(off, n int64) error { return f.child.Discard(off, n) }

// BlockStatus answers for the child's whole chain, as a filter over its
// "file" does.
func (f *image) BlockStatus(off, n int64) (block.Status, int64, error) {
	cs, l, err := block.StatusAbove(f.child, nil, off, n)
	return block.Status{Allocated: cs.Present, Data: cs.Data, Zero: cs.Zero, Depth: cs.Depth, Offset: -1}, l, err
}

// Filename is the child's: the filter has no options of its own, so
// QEMU's bdrv_refresh_filename names it by its child.
func (f *image) Filename() string { return f.child.Filename() }
