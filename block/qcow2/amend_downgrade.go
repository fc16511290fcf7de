package qcow2

// Downgrading a version 3 image to version 2 (compat=0.10; QEMU's
// qcow2_downgrade), in QEMU's order of refusals. The new header (72
// bytes, the extensions but QEMU's feature name table, the backing file
// name) is written in the first sector in one write, after the zero
// clusters are written out (amend_expand.go).

import (
	"encoding/binary"
	"errors"
	"fmt"
)

func (img *image) downgradeV2() error {
	h := img.hdr
	if h.Version != 3 {
		return nil
	}
	if h.RefcountOrder != 4 {
		return errors.New("compat=0.10 requires refcount_bits=16")
	}
	entries, err := img.snapshotEntries()
	if err != nil {
		return err
	}
	for i, sn := range img.snapshots {
		if img.snapshotDiskSize(entries[i], sn) != img.length || sn.VMStateSize > 0xffffffff {
			return errors.New("Internal snapshots prevent downgrade of image")
		}
	}
	if h.IncompatibleFeatures&incompatDirty != 0 {
		if err := img.markClean(); err != nil {
			return err
		}
	}
	if f := h.IncompatibleFeatures; f != 0 {
		return fmt.Errorf("Cannot downgrade an image with incompatible features %#x set", f)
	}
	if err := img.expandZeroClusters(); err != nil {
		// Corrupt metadata the expansion finds is signalled there, as in
		// QEMU (the image is marked corrupt).
		img.signalCorruptionLocked(err)
		return &ExpandError{Err: err}
	}
	cs := img.clusterSize
	be := binary.BigEndian
	c0 := make([]byte, cs)
	if err := readFile(img.file, c0, 0); err != nil {
		return err
	}
	var exts []byte
	for off := int(h.HeaderLength); off+8 <= len(c0); {
		typ, n := be.Uint32(c0[off:]), int(be.Uint32(c0[off+4:]))
		if typ == 0 {
			break
		}
		end := off + 8 + (n+7)&^7
		if end > len(c0) {
			return corrupt("header extensions run past the first cluster")
		}
		if typ != extFeatureTable {
			exts = append(exts, c0[off:end]...)
		}
		off = end
	}
	var name []byte
	if bo, bs := int64(h.BackingFileOffset), int64(be.Uint32(c0[16:])); bo != 0 {
		if bo+bs > int64(len(c0)) {
			return corrupt("the backing file name runs past the first cluster")
		}
		name = c0[bo : bo+bs]
	}
	nameOff := v2HeaderLen + len(exts) + 8
	if nameOff+len(name) > 512 {
		return errors.New("minivmm cannot downgrade this image to compat=0.10: its header extensions and backing file name do not fit in the first sector")
	}
	sec := make([]byte, 512)
	copy(sec, c0[:v2HeaderLen])
	be.PutUint32(sec[4:], 2)
	if err := img.writeHeaderSector(sec, v2HeaderLen, exts, name); err != nil {
		return err
	}
	h.Version, h.HeaderLength = 2, v2HeaderLen
	h.CompatibleFeatures, h.AutoclearFeatures = 0, 0
	img.lazy = false
	if name != nil {
		h.BackingFileOffset = uint64(nameOff)
	}
	return nil
}
