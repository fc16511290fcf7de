package qcow2

// Upgrading a version 2 (compat=0.10) image to version 3 (compat=1.1):
// the header gains the version 3 fields (no feature set, 16-bit
// refcounts, the 104-byte header), its extensions and backing file name
// move up after them. Everything is rewritten in the first sector, in
// one write, so that a crash leaves the old header or the new one; an
// image whose header would not fit in it is refused. QEMU also adds its
// feature name table, which no reader needs (unknown features are then
// named by their bit).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// errUpgradeTooBig is a header that one sector cannot hold once upgraded.
var errUpgradeTooBig = errors.New("minivmm cannot upgrade this image to compat=1.1: its header extensions and backing file name do not fit in the first sector with the version 3 header")

func (img *image) upgradeV3() error {
	h := img.hdr
	if h.Version != 2 {
		return nil
	}
	// Version 3 requires 16 bytes of extra data in every snapshot table
	// entry: QEMU rewrites the table first (writeSnapshotTable gives every
	// entry the 24 bytes it writes); a crash between leaves a version 2
	// image with a valid table.
	for _, sn := range img.snapshots {
		if sn.ExtraSize < 16 {
			entries, err := img.snapshotEntries()
			if err != nil {
				return err
			}
			if err := img.writeSnapshotTable(entries, slices.Clone(img.snapshots)); err != nil {
				return err
			}
			break
		}
	}
	be := binary.BigEndian
	c0 := make([]byte, img.clusterSize)
	if err := readFile(img.file, c0, 0); err != nil {
		return err
	}
	off := v2HeaderLen
	for off+8 <= len(c0) {
		typ, n := be.Uint32(c0[off:]), int(be.Uint32(c0[off+4:]))
		if typ == 0 {
			break
		}
		off += 8 + (n+7)&^7
	}
	if off > len(c0) {
		return corrupt("header extensions run past the first cluster")
	}
	exts := c0[v2HeaderLen:off]
	var name []byte
	if bo, bs := int64(be.Uint64(c0[8:])), int64(be.Uint32(c0[16:])); bo != 0 {
		if bo+bs > int64(len(c0)) {
			return corrupt("the backing file name runs past the first cluster")
		}
		name = c0[bo : bo+bs]
	}
	const v3Len = 104
	nameOff := v3Len + len(exts) + 8
	if nameOff+len(name) > 512 {
		return errUpgradeTooBig
	}
	sec := make([]byte, 512)
	copy(sec, c0[:v2HeaderLen])
	be.PutUint32(sec[4:], 3)
	be.PutUint32(sec[96:], 4)
	be.PutUint32(sec[100:], v3Len)
	if err := img.writeHeaderSector(sec, v3Len, exts, name); err != nil {
		return err
	}
	h.Version, h.HeaderLength, h.RefcountOrder = 3, v3Len, 4
	h.IncompatibleFeatures, h.CompatibleFeatures, h.AutoclearFeatures = 0, 0, 0
	if name != nil {
		h.BackingFileOffset = uint64(nameOff)
	}
	return nil
}

// writeHeaderSector completes sec, the new first sector, with the header
// extensions after its header of hdrLen bytes and the backing file name
// after their end mark, and writes it in one write made durable, so that
// a crash leaves the old header or the new one.
func (img *image) writeHeaderSector(sec []byte, hdrLen int, exts, name []byte) error {
	copy(sec[hdrLen:], exts)
	if name != nil {
		nameOff := hdrLen + len(exts) + 8
		copy(sec[nameOff:], name)
		binary.BigEndian.PutUint64(sec[8:], uint64(nameOff))
	}
	if img.beforeWrite != nil {
		img.beforeWrite()
	}
	if _, err := img.file.WriteAt(sec, 0); err != nil {
		return fmt.Errorf("qcow2: could not write the header: %w", err)
	}
	return img.syncFile()
}
