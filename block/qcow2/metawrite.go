package qcow2

// Every write of the exclusive path goes through checkedWrite: the
// overlap check against metadata (overlap.go) first.

import (
	"fmt"
)

// Kinds of metadata a write may be allowed to overlap (QEMU's overlap
// check "ign" mask).
const (
	olL1 = 1 << iota
	olL2
	olRefTable
	olRefblocks
	olInactiveL2
)

// checkedWrite writes file bytes after the overlap check.
func (img *image) checkedWrite(p []byte, off int64, ign int) error {
	if img.corrupted {
		return errVersionCorrupt
	}
	if img.beforeWrite != nil {
		img.beforeWrite()
	}
	if what := img.overlap(off, int64(len(p)), ign); what != "" {
		msg := fmt.Sprintf("Preventing invalid write on metadata (overlaps with %s)", what)
		img.markCorrupt(msg, off, int64(len(p)))
		return corrupt("%s; image marked as corrupt", msg)
	}
	// A cluster may be allocated past the end of the file: QEMU allocates
	// only the subclusters a write touches, so its file can end inside
	// the last data cluster. Writing there is legal; the file node only
	// takes writes inside its length.
	if err := img.ensureFile(off + int64(len(p))); err != nil {
		return err
	}
	_, err := img.file.WriteAt(p, off)
	return err
}

func (img *image) writeMeta(p []byte, off int64, ign int) error { return img.checkedWrite(p, off, ign) }
