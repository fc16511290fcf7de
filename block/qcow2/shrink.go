package qcow2

// Shrinking an image (qemu-img resize --shrink), as QEMU's
// qcow2_co_truncate does: the clusters past the new end are dropped, the
// L2 tables wholly past it freed (their L1 entries zeroed; l1_size stays,
// as in QEMU), the header's size updated, and the file cut after the
// last cluster still in use.

import (
	"encoding/binary"
	"fmt"

	"minivmm/block"
)

// shrink makes the image size bytes long (size < length, a multiple of
// 512), with img.wmu held and the image ready for writes.
func (img *image) shrink(size int64) error {
	cs := img.clusterSize
	keepClusters := (size + cs - 1) / cs // guest clusters that stay
	oldClusters := (img.length + cs - 1) / cs
	l2Cover := int64(1) << img.l2Bits
	firstFreeL1 := (keepClusters + l2Cover - 1) / l2Cover // L1 entries wholly past the end
	// The L2 tables dropped are read from disk: nothing of them may be
	// held in memory.
	if err := img.writeBack(); err != nil {
		return err
	}
	if err := img.dropTail(keepClusters, min(oldClusters, firstFreeL1*l2Cover)); err != nil {
		return fmt.Errorf("Failed to discard cropped clusters: %w", err)
	}
	for i := firstFreeL1; i < int64(len(img.l1)); i++ {
		if err := img.dropL2(i); err != nil {
			return fmt.Errorf("Failed to reduce the number of L2 tables: %w", err)
		}
	}
	if err := img.setSize(size); err != nil {
		return err
	}
	img.comp = compState{} // its packing point may have been freed
	// What was dropped is freed before the file is cut after what is
	// still in use.
	if err := img.writeBack(); err != nil {
		return err
	}
	if err := img.rc.dropUnusedBlocks(); err != nil {
		return fmt.Errorf("Failed to discard unused refblocks: %w", err)
	}
	return img.cutFile()
}

// dropTail unmaps guest clusters [from, to) of the L2 table that holds
// the new end (copying it first if it is shared); their references are
// dropped once the entries are on disk.
func (img *image) dropTail(from, to int64) error {
	var olds []uint64
	for c := from; c < to; c++ {
		l2Off, e, bm, _, err := img.l2Entry(c)
		if err != nil {
			return err
		}
		if l2Off == 0 || e == 0 && bm == 0 {
			continue
		}
		if err := img.setEntryOwned(c, 0, 0); err != nil {
			return err
		}
		if e&offsetMask != 0 || e&flagCompressed != 0 {
			olds = append(olds, e)
		}
	}
	return img.freeAllFor(olds, discardAlways)
}

// dropL2 zeroes L1 entry i and, once that is on disk (freeAll), drops the
// active image's reference on the L2 table and on everything it
// references (each was counted once per table walk, so this is right for
// a table a snapshot shares too).
func (img *image) dropL2(i int64) error {
	img.l1mu.RLock()
	l1e := img.l1[i]
	img.l1mu.RUnlock()
	off := int64(l1e & offsetMask)
	if off == 0 {
		return nil
	}
	cs := img.clusterSize
	if l1e&l1Reserved != 0 || off&(cs-1) != 0 {
		return corrupt("L1 entry %#x at index %#x is invalid", l1e, i)
	}
	t := make([]byte, cs)
	if err := readFile(img.file, t, off); err != nil {
		return err
	}
	if err := img.setL1(i, 0); err != nil {
		return err
	}
	var olds []uint64
	for j := 0; j < len(t); j += 8 * img.entryWords {
		if e := binary.BigEndian.Uint64(t[j:]); e&offsetMask != 0 || e&flagCompressed != 0 {
			olds = append(olds, e)
		}
	}
	img.frees = append(img.frees, freed{uint64(off), discardAlways}) // the table: in the file in any case
	return img.freeAllFor(olds, discardAlways)
}

// cutFile truncates the file after the last cluster in use; failing to
// is not an error (QEMU only warns): the image is valid either way.
func (img *image) cutFile() error {
	rc := img.rc
	last := rc.end - 1
	for ; last > 0; last-- {
		v, err := rc.get(last)
		if err != nil {
			return err
		}
		if v != 0 {
			break
		}
	}
	cs := img.clusterSize
	if end := (last + 1) * cs; end < img.file.Length() {
		if err := img.file.Truncate(end); err != nil {
			return nil
		}
		rc.end = last + 1
		rc.hint = min(rc.hint, rc.end)
	}
	return nil
}

// notSupported is an error with QEMU's text that is block.ErrNotSupported.
type notSupported string

func (e notSupported) Error() string { return string(e) }
func (e notSupported) Unwrap() error { return block.ErrNotSupported }
