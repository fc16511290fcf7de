package qcow2

// Readying an image for writes: what this driver refuses to write, and
// at the first write the refcounts loaded, a dirty image repaired and
// unknown autoclear bits cleared.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
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
// refcounts loaded, a dirty image repaired, unknown autoclear bits
// cleared.
func (img *image) startWriting() error {
	if img.rc != nil {
		return nil
	}
	if err := img.checkWritable(); err != nil {
		return err
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
	if img.hdr.IncompatibleFeatures&incompatDirty != 0 {
		if err := img.repair(); err != nil {
			img.rc = nil
			return fmt.Errorf("qcow2: could not repair the refcounts of a dirty image: %w", err)
		}
	}
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

// repair rebuilds the refcounts of a dirty image from the references
// (check.go's walk), then clears the dirty bit.
func (img *image) repair() error {
	h := img.hdr
	c := &checker{
		file: img.file, hdr: h, log: io.Discard, res: &CheckResult{},
		g:             newGeometry(h, int(h.clusterSize())),
		refblockBits:  h.ClusterBits + 3 - h.RefcountOrder,
		refblockCache: map[int64][]byte{},
		refMax:        img.rc.max,
	}
	cs := h.clusterSize()
	nb := (img.file.Length() + cs - 1) / cs
	if nb > math.MaxInt32 {
		return errors.New("File too large")
	}
	c.refs = make([]uint64, nb)
	c.limit = nb + maxCheckGrowth
	c.reftable = img.rc.table
	if err := c.calculate(h, img.ext, img.snapshots); err != nil {
		return err
	}
	if c.res.Corruptions > 0 || c.res.CheckErrors > 0 {
		return errors.New("the image has corruptions beyond stale refcounts")
	}
	rc := img.rc
	rc.end = max(rc.end, int64(len(c.refs)))
	for k, want := range c.refs {
		have, err := rc.get(int64(k))
		if err != nil {
			return err
		}
		if have != want {
			if err := rc.set(int64(k), want); err != nil {
				return err
			}
		}
	}
	if err := img.syncRefcounts(); err != nil {
		return err
	}
	rc.hint = 0
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], h.IncompatibleFeatures&^incompatDirty)
	if err := img.patchHeader(72, b[:]); err != nil {
		return err
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	h.IncompatibleFeatures &^= incompatDirty
	return nil
}
