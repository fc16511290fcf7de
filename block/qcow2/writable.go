package qcow2

// Readying an image for writes: what this driver refuses to write, and
// at the first write the refcounts loaded, a dirty image repaired and
// unknown autoclear bits cleared.

import (
	"encoding/binary"
	"errors"
)

var (
	errCorruptWrite   = errors.New("qcow2: Image is corrupt; cannot be opened read/write")
	errV2SnapResize   = notSupported("Can't resize a v2 image which has snapshots")
	errVersionCorrupt = corrupt("image marked corrupt: writes refused")
)

// checkWritable refuses what this driver cannot write.
func (img *image) checkWritable() error {
	h := img.hdr
	switch {
	case h.IncompatibleFeatures&incompatCorrupt != 0:
		return errCorruptWrite
	case h.CryptMethod != cryptNone:
		return errors.New("minivmm cannot write encrypted qcow2 images")
	}
	return nil
}

// startWriting prepares the image for writes, once, with img.wmu held:
// a dirty image repaired (dirty_repair.go), refcounts loaded, unknown
// autoclear bits cleared.
func (img *image) startWriting() error {
	if img.rc != nil {
		return nil
	}
	if err := img.checkWritable(); err != nil {
		return err
	}
	if img.hdr.IncompatibleFeatures&incompatDirty != 0 {
		if err := img.repairDirty(); err != nil {
			return err
		}
	}
	rc, err := newRefcounts(img)
	if err != nil {
		return err
	}
	if img.snap, err = img.loadSnapMeta(); err != nil {
		return err
	}
	img.l1mu.Lock()
	if n := int(img.hdr.L1Size); len(img.l1) < n {
		l1 := make([]uint64, n)
		copy(l1, img.l1)
		img.l1 = l1
	}
	img.l1mu.Unlock()
	img.rc = rc
	img.metaChanged()
	if keep := img.hdr.AutoclearFeatures & autoclearDataFileRaw; img.hdr.Version >= 3 && img.hdr.AutoclearFeatures != keep {
		// minivmm maintains no autoclear feature but data-file-raw
		// (bitmaps would go stale): clear the others, as a writer that
		// does not know them.
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], keep)
		if err := img.patchHeader(88, b[:]); err != nil {
			img.rc = nil
			return err
		}
		if err := img.syncFile(); err != nil {
			img.rc = nil
			return err
		}
		img.hdr.AutoclearFeatures = keep
	}
	return nil
}
