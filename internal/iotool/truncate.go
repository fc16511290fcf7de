package iotool

import (
	"errors"

	"minivmm/internal/qtool"
)

// truncateChunk is the most zeroes one preallocating write carries.
const truncateChunk = 1 << 20

// truncateTo resizes the image as qemu-io 7.2's truncate -m does: the
// grown area preallocated with falloc (raw: allocated zeroes; qcow2:
// data clusters) or full (written zeroes). Both tools refuse
// preallocation when shrinking, and raw refuses metadata. The errors are
// qemu-io's texts.
func (t *ioTool) truncateTo(size int64, prealloc string) error {
	qcow2 := t.node.Driver() == "qcow2"
	old := t.node.Length()
	switch {
	case prealloc == "off":
	case !qcow2 && prealloc == "metadata":
		return errors.New("Unsupported preallocation mode: metadata")
	case size < old && qcow2:
		return errors.New("Preallocation can't be used for shrinking an image")
	case size < old:
		return errors.New("Cannot use preallocation for shrinking files")
	case qcow2 && prealloc == "metadata":
		// QEMU allocates the new clusters' L2 entries without data
		// (they read as zeroes through the file's holes); minivmm's
		// qcow2 driver has no such allocation.
		return errors.New("Unsupported preallocation mode 'metadata' for qcow2 in minivmm io (falloc, full and off work)")
	}
	if err := t.node.Truncate(size); err != nil {
		return errors.New(qtool.Message(err))
	}
	if prealloc == "off" {
		return nil
	}
	// Only the whole sectors the grow added: the node's length is
	// rounded to them.
	end := t.node.Length()
	if !qcow2 && prealloc == "falloc" {
		// Allocated, not unmapped: the file driver fallocates them.
		if err := t.node.WriteZeroes(old, end-old, false); err != nil {
			return errors.New(qtool.Message(err))
		}
		return nil
	}
	zero := make([]byte, min(truncateChunk, max(end-old, 0)))
	for off := old; off < end; {
		n := min(int64(len(zero)), end-off)
		if _, err := t.node.WriteAt(zero[:n], off); err != nil {
			return errors.New(qtool.Message(err))
		}
		off += n
	}
	return nil
}
