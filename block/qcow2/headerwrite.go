package qcow2

// Writes to the header in place: single fields patched, the corrupt bit,
// and the dirty bit of lazy refcounts (set at the first refcount change,
// cleared once everything held in memory is written back).

import (
	"encoding/binary"
	"fmt"
)

// patchHeader rewrites bytes of the header in place (the sector holding
// them), leaving everything else of cluster 0 (extensions, unknown ones
// included) as it is.
func (img *image) patchHeader(off int64, b []byte) error {
	if img.beforeWrite != nil {
		img.beforeWrite()
	}
	sec := make([]byte, 512)
	if err := readFile(img.file, sec, 0); err != nil {
		return err
	}
	copy(sec[off:], b)
	_, err := img.file.WriteAt(sec, 0)
	return err
}

// markCorrupt sets the corrupt bit (version 3), refuses further writes and
// says so on the monitor.
func (img *image) markCorrupt(msg string, offset, size int64) {
	img.corrupted = true
	img.dead.Store(true)
	img.reportCorruption(msg, offset, size, true)
	if img.hdr.Version >= 3 {
		var b [8]byte
		img.hdr.IncompatibleFeatures |= incompatCorrupt
		binary.BigEndian.PutUint64(b[:], img.hdr.IncompatibleFeatures)
		if img.patchHeader(72, b[:]) == nil {
			img.syncFile()
		}
	}
}

// markDirty sets the dirty bit on disk (QEMU's qcow2_mark_dirty): from
// then on, refcounts on disk may be stale.
func (img *image) markDirty() error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], img.hdr.IncompatibleFeatures|incompatDirty)
	if err := img.patchHeader(72, b[:]); err != nil {
		return fmt.Errorf("qcow2: could not mark the image dirty: %w", err)
	}
	if err := img.syncFile(); err != nil {
		return fmt.Errorf("qcow2: could not mark the image dirty: %w", err)
	}
	img.hdr.IncompatibleFeatures |= incompatDirty
	return nil
}

// markClean writes back all metadata held in memory, lazy refcounts
// included, and then clears the dirty bit (QEMU's qcow2_mark_clean).
func (img *image) markClean() error {
	if err := img.writeBack(); err != nil {
		return err
	}
	rc := img.rc
	if len(rc.dirty) > 0 {
		if err := rc.writeBack(); err != nil {
			return err
		}
		if err := img.syncFile(); err != nil {
			return err
		}
	}
	if err := img.trimFile(); err != nil {
		return err
	}
	if !rc.deferred {
		return nil
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], img.hdr.IncompatibleFeatures&^incompatDirty)
	if err := img.patchHeader(72, b[:]); err != nil {
		return fmt.Errorf("qcow2: could not mark the image clean: %w", err)
	}
	if err := img.syncFile(); err != nil {
		// The clean header may reach the disk some day, the rest may not:
		// put the dirty bit back where the kernel holds it (best effort).
		binary.BigEndian.PutUint64(b[:], img.hdr.IncompatibleFeatures)
		img.patchHeader(72, b[:])
		return fmt.Errorf("qcow2: could not mark the image clean: %w", err)
	}
	img.hdr.IncompatibleFeatures &^= incompatDirty
	rc.deferred = false
	return nil
}
