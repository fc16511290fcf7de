package iotool

import (
	"errors"

	"minivmm/internal/qtool"
)

// truncateTo resizes the image as qemu-io 7.2's truncate -m does: the
// grown area preallocated with metadata (qcow2: clusters allocated, not
// written), falloc (raw: allocated zeroes; qcow2: data clusters) or full
// (written zeroes). Both tools refuse preallocation when shrinking, and
// raw refuses metadata. The errors are qemu-io's texts.
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
	}
	if err := qtool.GrowPreallocated(t.node, size, prealloc); err != nil {
		return errors.New(qtool.Message(err))
	}
	return nil
}
