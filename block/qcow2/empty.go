package qcow2

// Emptying an image whole (QEMU's make_completely_empty, what
// qcow2_make_empty does when it can): instead of discarding every
// cluster, the metadata is rewritten from scratch — the L1 table zeroed,
// a new refcount table at cluster 1 with its first refcount block at
// cluster 2 and the L1 table at cluster 3, and the file cut after it.
// The image is marked dirty first, so that a crash anywhere in between
// leaves an image the repair at open makes consistent. Unlike QEMU, the
// zeroed clusters are flushed before the header points at them.

import (
	"encoding/binary"
	"fmt"
)

// canEmptyWhole is qcow2_make_empty's condition for make_completely_empty:
// version 3 (the dirty bit), nothing else owning clusters (snapshots,
// bitmaps, a LUKS header), the header, refcount table, first refcount
// block and L1 table within one refcount block, no external data file.
func (img *image) canEmptyWhole() bool {
	h := img.hdr
	perBlock := int64(1) << (h.ClusterBits + 3 - h.RefcountOrder)
	return h.Version >= 3 && len(img.snapshots) == 0 && !img.ext.HasBitmaps &&
		3+img.l1Clusters() <= perBlock && h.CryptMethod == cryptNone && img.data == img.file
}

func (img *image) l1Clusters() int64 {
	per := img.clusterSize / 8
	return (int64(img.hdr.L1Size) + per - 1) / per
}

// emptyWhole rewrites the metadata of an empty image; img.wmu held, the
// image ready for writes. An error after the L1 table was touched leaves
// the image unusable (as QEMU's node loses its driver): the file is dirty
// and repaired at its next open.
func (img *image) emptyWhole() error {
	// Everything held in memory goes to the file first (QEMU empties its
	// caches, writing back what is dirty).
	if err := img.markClean(); err != nil {
		return err
	}
	if err := img.markDirty(); err != nil {
		return err
	}
	cs := img.clusterSize
	l1c := img.l1Clusters()
	err := img.rewriteEmpty(cs, l1c)
	if err != nil {
		// The refcounts in memory no longer describe the file: nothing
		// of them is written back at close (QEMU's node has lost its
		// driver).
		img.dead.Store(true)
		img.rc = nil
		return err
	}
	// The image is consistent again: refcounts, L1 and header on disk.
	img.hdr.L1TableOffset = uint64(3 * cs)
	img.hdr.RefcountTableOffset = uint64(cs)
	img.hdr.RefcountTableClusters = 1
	img.l1mu.Lock()
	img.l1 = make([]uint64, img.hdr.L1Size)
	img.l1mu.Unlock()
	img.cache.mu.Lock()
	for off := range img.cache.entries {
		img.cache.remove(off)
	}
	img.cache.mu.Unlock()
	clear(img.l2Dirty)
	img.frees = nil
	img.comp = compState{}
	img.snap = nil
	img.grown = false
	img.metaIdx = nil
	img.metaChanged()
	// The refcounts are read again at the next write.
	img.rc = nil
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], img.hdr.IncompatibleFeatures&^incompatDirty)
	if err := img.patchHeader(72, b[:]); err != nil {
		return fmt.Errorf("qcow2: could not mark the image clean: %w", err)
	}
	if err := img.syncFile(); err != nil {
		return fmt.Errorf("qcow2: could not mark the image clean: %w", err)
	}
	img.hdr.IncompatibleFeatures &^= incompatDirty
	if err := img.file.Truncate((3 + l1c) * cs); err != nil {
		return err
	}
	return img.startWriting()
}

// rewriteEmpty writes the new metadata, firing blkdebug's events where
// QEMU's make_completely_empty does.
func (img *image) rewriteEmpty(cs, l1c int64) error {
	img.file.Event("l1_update")
	if err := img.file.WriteZeroes(int64(img.hdr.L1TableOffset), l1c*cs, false); err != nil {
		return err
	}
	img.file.Event("empty_image_prepare")
	// May overwrite the old refcount structures and L1 table: the image
	// is dirty, its refcounts rebuilt if a crash comes.
	if err := img.file.WriteZeroes(cs, (2+l1c)*cs, false); err != nil {
		return err
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	img.file.Event("l1_update")
	img.file.Event("reftable_update")
	var hb [20]byte
	binary.BigEndian.PutUint64(hb[0:], uint64(3*cs))
	binary.BigEndian.PutUint64(hb[8:], uint64(cs))
	binary.BigEndian.PutUint32(hb[16:], 1)
	if err := img.patchHeader(40, hb[:]); err != nil {
		return err
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	img.file.Event("refblock_alloc")
	var rt [8]byte
	binary.BigEndian.PutUint64(rt[:], uint64(2*cs))
	if _, err := img.file.WriteAt(rt[:], cs); err != nil {
		return err
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	// Header, refcount table, refcount block and L1 table: refcount 1.
	rb := make([]byte, cs)
	for i := int64(0); i < 3+l1c; i++ {
		setRefcountAt(rb, img.hdr.RefcountOrder, i, 1)
	}
	img.file.Event("refblock_update")
	if _, err := img.file.WriteAt(rb, 2*cs); err != nil {
		return err
	}
	return img.syncFile()
}
