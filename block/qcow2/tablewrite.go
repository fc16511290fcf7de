package qcow2

// The L1 and L2 tables on the write path: entries looked up, tables
// allocated, entries changed (L1 written through, L2 slices held in the
// cache until written back).

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
)

// l2Slot finds the L2 entry of guest cluster c: the L2 table's offset (0
// if none), the entry, and whether the L1 entry has COPIED.
func (img *image) l2Slot(c int64) (l2Off int64, e uint64, copied bool, err error) {
	l2Off, e, _, copied, err = img.l2Entry(c)
	return l2Off, e, copied, err
}

// l2Entry is l2Slot with the subcluster bitmap (0 without extended L2).
func (img *image) l2Entry(c int64) (l2Off int64, e, bm uint64, copied bool, err error) {
	l1i := c >> img.l2Bits
	img.l1mu.RLock()
	var l1e uint64
	if l1i < int64(len(img.l1)) {
		l1e = img.l1[l1i]
	}
	img.l1mu.RUnlock()
	l2Off = int64(l1e & offsetMask)
	if l2Off == 0 {
		return 0, 0, 0, false, nil
	}
	if l1e&l1Reserved != 0 || l2Off&(img.clusterSize-1) != 0 {
		return 0, 0, 0, false, corrupt("L1 entry %#x at index %#x is invalid", l1e, l1i)
	}
	l2i := c & (1<<img.l2Bits - 1)
	slice := l2i / img.sliceEntries
	t, err := img.cache.get(l2Off + slice*img.sliceBytes)
	if err != nil {
		return 0, 0, 0, false, err
	}
	o := (l2i % img.sliceEntries) * int64(img.entryWords) * 8
	e = binary.BigEndian.Uint64(t[o:])
	if img.extL2 {
		bm = binary.BigEndian.Uint64(t[o+8:])
	}
	return l2Off, e, bm, l1e&flagCopied != 0, nil
}

// ensureL2 returns the L2 table of L1 index l1i, allocating one if the
// L1 entry is empty: refcount, table (zeroes) and flush, then the L1
// entry with COPIED.
func (img *image) ensureL2(l1i int64) (int64, error) {
	if l1i >= int64(len(img.l1)) {
		return 0, corrupt("L1 index %#x past the L1 table", l1i)
	}
	img.l1mu.RLock()
	l1e := img.l1[l1i]
	img.l1mu.RUnlock()
	cs := img.clusterSize
	if off := int64(l1e & offsetMask); off != 0 {
		if l1e&flagCopied != 0 {
			return off, nil
		}
		v, err := img.rc.get(off / cs)
		switch {
		case err != nil:
			return 0, err
		case v == 0:
			return 0, corrupt("L2 table at %#x (L1 index %#x) has refcount 0", off, l1i)
		case v > 1:
			return img.copyL2(l1i, off)
		}
		return off, img.setL1(l1i, uint64(off)|flagCopied)
	}
	off, err := img.rc.alloc()
	if err != nil {
		return 0, err
	}
	if off == 0 { // cluster 0's refcount is 0: a corrupt refcount block (QEMU's l2_allocate)
		return 0, corrupt("Preventing invalid allocation of L2 table at offset 0")
	}
	zero := make([]byte, cs)
	img.file.Event("l2_alloc_write")
	if err := img.checkedWrite(zero, off, 0); err != nil {
		img.rc.release(off/cs, 1)
		return 0, err
	}
	// QEMU's l2_allocate flushes the refcount cache even with lazy
	// refcounts: the table's refcount is on disk before the L1 names it,
	// and a writer that dies leaves only the data clusters unaccounted.
	if err := img.rc.writeBack(); err != nil {
		img.rc.release(off/cs, 1)
		return 0, err
	}
	if err := img.syncRefcounts(); err != nil {
		img.rc.release(off/cs, 1)
		return 0, err
	}
	for s := int64(0); s < cs; s += img.sliceBytes {
		img.cache.put(off+s, make([]byte, img.sliceBytes), false)
	}
	if err := img.setL1(l1i, uint64(off)|flagCopied); err != nil {
		img.rc.release(off/cs, 1)
		return 0, err
	}
	return off, nil
}

// setL1 writes L1 entry i (the sector holding it) and updates memory.
func (img *image) setL1(i int64, e uint64) error {
	img.file.Event("l1_update")
	img.l1mu.Lock()
	old := img.l1[i]
	img.l1[i] = e
	img.metaChanged()
	sec := (i * 8) &^ 511
	buf := make([]byte, 512)
	for j := sec / 8; j < min(int64(len(img.l1)), sec/8+64); j++ {
		binary.BigEndian.PutUint64(buf[8*(j-sec/8):], img.l1[j])
	}
	img.l1mu.Unlock()
	l1Bytes := (int64(len(img.l1))*8 + 511) &^ 511
	buf = buf[:min(512, l1Bytes-sec)]
	if err := img.checkedWrite(buf, int64(img.hdr.L1TableOffset)+sec, olL1); err != nil {
		img.l1mu.Lock()
		img.l1[i] = old
		img.l1mu.Unlock()
		img.metaChanged()
		return err
	}
	return nil
}

// setL2 writes the L2 entry of guest cluster c in table l2Off; with
// extended L2 its bitmap becomes 0 (what a compressed cluster needs).
func (img *image) setL2(l2Off, c int64, e uint64) error { return img.setL2Entry(l2Off, c, e, 0) }

// setL2Entry sets the L2 entry (and, with extended L2, the bitmap) of
// guest cluster c in table l2Off: the updated slice is published to the
// cache, pinned there until writeBack writes it.
func (img *image) setL2Entry(l2Off, c int64, e, bm uint64) error {
	img.file.Event("l2_update")
	l2i := c & (1<<img.l2Bits - 1)
	sliceOff := l2Off + l2i/img.sliceEntries*img.sliceBytes
	t, err := img.cache.get(sliceOff)
	if err != nil {
		return err
	}
	o := (l2i % img.sliceEntries) * int64(img.entryWords) * 8
	if img.l2Dirty[sliceOff] && !img.extL2 {
		// The pinned copy made at this round's first change is the write
		// path's own: changed in place (requests read it atomically),
		// rather than copying the whole slice for every entry. Extended
		// L2 entries are two words that must change together, so they
		// keep copying.
		storeEntry(t, int(o), e)
		return nil
	}
	nt := append([]byte(nil), t...)
	binary.BigEndian.PutUint64(nt[o:], e)
	if img.extL2 {
		binary.BigEndian.PutUint64(nt[o+8:], bm)
	}
	img.cache.put(sliceOff, nt, true)
	img.l2Dirty[sliceOff] = true
	return nil
}

// writeL2 writes the L2 slices changed in memory.
func (img *image) writeL2() error {
	for _, off := range slices.Sorted(maps.Keys(img.l2Dirty)) {
		t, err := img.cache.get(off)
		if err != nil {
			return err
		}
		img.file.Event("l2_update")
		if err := img.checkedWrite(t, off, olL2); err != nil {
			return fmt.Errorf("qcow2: could not write the L2 table slice at %#x: %w", off, err)
		}
		img.cache.unpin(off)
		delete(img.l2Dirty, off)
	}
	return nil
}
