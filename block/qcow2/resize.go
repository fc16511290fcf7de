package qcow2

// Resizing: growing (the L1 table moved if it must grow); shrinking is
// shrink.go's.

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Truncate resizes the image: growing moves the L1 table if it must
// grow; shrinking is shrink's.
func (img *image) Truncate(size int64) error {
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
	if need > int64(img.hdr.L1Size) {
		if err := img.growL1(need); err != nil {
			return err
		}
	}
	return img.setSize(size)
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
