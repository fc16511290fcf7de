package qcow2

// Resizing: growing (the L1 table moved if it must grow); shrinking is
// shrink.go's.

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Truncate resizes the image: growing moves the L1 table if it must
// grow; shrinking is shrink's. The area a grow adds is left unallocated:
// it reads as the backing file there, if any (the graph asks for
// TruncateZeroed where that would show data).
func (img *image) Truncate(size int64) error { return img.resizeData(size, img.truncate(size, false)) }

// TruncateZeroed is Truncate, but the area a grow adds reads as zeroes
// whatever the backing file holds there, as QEMU's qcow2_co_truncate
// makes it when asked to (BDRV_REQ_ZERO_WRITE): from the first subcluster
// boundary at or past the old end, zero clusters; before it, zeroes
// written out, over whatever an earlier shrink left in that cluster.
// Version 2 images have no zero clusters: as QEMU, that is refused
// (before anything changes, unlike QEMU) unless only the head is grown.
func (img *image) TruncateZeroed(size int64) error {
	return img.resizeData(size, img.truncate(size, true))
}

func (img *image) truncate(size int64, zero bool) error {
	if err := img.begin(); err != nil {
		return err
	}
	defer img.wmu.Unlock()
	switch {
	case size < 0:
		return fmt.Errorf("qcow2: invalid image size %d", size)
	case size%512 != 0:
		return errors.New("The new size must be a multiple of 512")
	case img.hdr.Version < 3 && len(img.snapshots) > 0:
		// Snapshots record their size only from version 3 on.
		return errV2SnapResize
	case size < img.length:
		return img.shrink(size)
	case size == img.length:
		return nil
	}
	cs := img.clusterSize
	clusters := (size + cs - 1) / cs
	need := (clusters + 1<<img.l2Bits - 1) >> img.l2Bits
	if need > maxL1Bytes/8 {
		return errors.New("qcow2: image too large: the L1 table would exceed its maximum size")
	}
	old := img.length
	scs := int64(1) << img.scBits
	zeroStart := (old + scs - 1) / scs * scs
	if zero && img.hdr.Version < 3 && size > zeroStart {
		return notSupported("Failed to zero out new clusters: Operation not supported")
	}
	if need > int64(img.hdr.L1Size) {
		if err := img.growL1(need); err != nil {
			return err
		}
	}
	if zero {
		// The new area is written before the header says it exists,
		// as QEMU orders it: a crash in between leaves the old size.
		img.length = size
		if err := img.zeroGrown(old, zeroStart); err != nil {
			img.length = old
			return err
		}
	}
	if err := img.setSize(size); err != nil {
		img.length = old
		return err
	}
	return nil
}

// zeroGrown makes [old, img.length) read as zeroes: zero clusters from
// zeroStart (old rounded up to a subcluster) on, zeroes written before it.
func (img *image) zeroGrown(old, zeroStart int64) error {
	if zeroStart < img.length {
		if err := img.writeZeroesLocked(zeroStart, img.length-zeroStart, false); err != nil {
			return fmt.Errorf("Failed to zero out new clusters: %w", err)
		}
	}
	if head := min(zeroStart, img.length) - old; head > 0 {
		if err := img.writeLocked(make([]byte, head), old); err != nil {
			return fmt.Errorf("Failed to zero out the new area: %w", err)
		}
	}
	return nil
}

// setSize writes the header's virtual size, durably, then adopts it.
func (img *image) setSize(size int64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(size))
	if err := img.patchHeader(24, b[:]); err != nil {
		return err
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	img.hdr.Size = uint64(size)
	img.length = size
	return nil
}

// growL1 moves the L1 table to a larger one at the end of the image.
func (img *image) growL1(entries int64) error {
	cs := img.clusterSize
	n := (entries*8 + cs - 1) / cs
	img.file.Event("l1_grow_alloc_table")
	off, err := img.rc.allocContiguous(n)
	if err != nil {
		return err
	}
	raw := make([]byte, n*cs)
	img.l1mu.RLock()
	for i, e := range img.l1 {
		binary.BigEndian.PutUint64(raw[8*i:], e)
	}
	img.l1mu.RUnlock()
	img.file.Event("l1_grow_write_table")
	if err := img.checkedWrite(raw, off, 0); err != nil {
		img.rc.release(off/cs, n)
		return err
	}
	if err := img.syncRefcounts(); err != nil {
		img.rc.release(off/cs, n)
		return err
	}
	var hf [12]byte
	binary.BigEndian.PutUint32(hf[:], uint32(entries))
	binary.BigEndian.PutUint64(hf[4:], uint64(off))
	img.file.Event("l1_grow_activate_table")
	if err := img.patchHeader(36, hf[:]); err != nil {
		img.rc.release(off/cs, n)
		return err
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	oldOff, oldN := int64(img.hdr.L1TableOffset), (int64(img.hdr.L1Size)*8+cs-1)/cs
	img.l1mu.Lock()
	l1 := make([]uint64, entries)
	copy(l1, img.l1)
	img.l1 = l1
	img.hdr.L1Size, img.hdr.L1TableOffset = uint32(entries), uint64(off)
	img.l1mu.Unlock()
	img.metaChanged()
	for i := int64(0); i < oldN && oldOff != 0; i++ {
		if err := img.rc.add(oldOff/cs+i, -1); err != nil {
			return err
		}
	}
	return nil
}
