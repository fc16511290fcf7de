package qcow2

// Writing images with internal snapshots. A snapshot shares the active
// image's L2 tables and data clusters (refcount > 1, no COPIED flag):
// the active image copies an L2 table before changing it, and a data
// cluster before writing it, dropping one reference of the shared one.
// What snapshots own alone (their table, L1 tables and L2 tables) is
// kept out of reach of every write by the overlap check.

import (
	"encoding/binary"
	"fmt"
)

// snapMeta is the metadata of the internal snapshots, for the overlap
// check (QEMU's snapshot table, inactive L1 and inactive L2 checks).
type snapMeta struct {
	tableOff, tableSize int64
	l1s                 [][2]int64     // offset, bytes
	l2s                 map[int64]bool // cluster index of every L2 table of a snapshot
}

// loadSnapMeta reads the snapshots' L1 tables, once, when writing starts.
func (img *image) loadSnapMeta() (*snapMeta, error) {
	if len(img.snapshots) == 0 {
		return nil, nil
	}
	cs := img.clusterSize
	m := &snapMeta{tableOff: int64(img.hdr.SnapshotsOffset), l2s: map[int64]bool{}}
	for _, sn := range img.snapshots {
		m.tableSize = (m.tableSize+7)&^7 + snapshotHeaderSize + int64(sn.ExtraSize) + int64(len(sn.ID)) + int64(len(sn.Name))
		off, size := int64(sn.L1TableOffset), int64(sn.L1Size)*8
		if off&(cs-1) != 0 || size > maxL1Bytes || off < 0 || off+size > img.file.Length() {
			// As QEMU, writes go on: what uses the snapshot refuses it
			// (checkSnapshotL1); its L1 table is not where it says.
			continue
		}
		m.l1s = append(m.l1s, [2]int64{off, size})
		raw := make([]byte, size)
		if err := readFile(img.file, raw, off); err != nil {
			return nil, fmt.Errorf("qcow2: could not read the L1 table of snapshot %s (%s): %w", sn.ID, sn.Name, err)
		}
		for i := 0; i < len(raw); i += 8 {
			if o := int64(binary.BigEndian.Uint64(raw[i:]) & offsetMask); o != 0 {
				m.l2s[o/cs] = true
			}
		}
	}
	return m, nil
}

// overlap names the snapshot metadata [off, off+n) overlaps, or "";
// inactive L2 tables only with l2.
func (m *snapMeta) overlap(off, n, cs int64, l2 bool) string {
	if m == nil || n <= 0 {
		return ""
	}
	in := func(start, size int64) bool { return size > 0 && off < start+size && start < off+n }
	if in(m.tableOff, m.tableSize) {
		return "snapshot table"
	}
	for _, t := range m.l1s {
		if in(t[0], t[1]) {
			return "inactive L1 table"
		}
	}
	for c := off / cs; l2 && c <= (off+n-1)/cs; c++ {
		if m.l2s[c] {
			return "inactive L2 table"
		}
	}
	return ""
}

// copyL2 gives L1 entry l1i a copy of its shared L2 table at old: the
// copy (with its refcount) is on disk before the L1 entry points to it
// with COPIED, and the L1 entry is on disk before the old table loses
// the active image's reference. The data clusters keep their refcounts:
// each was counted once per table referencing it. No entry of the copy
// has COPIED: what a shared table references is shared.
func (img *image) copyL2(l1i, old int64) (int64, error) {
	cs := img.clusterSize
	t := make([]byte, cs)
	img.file.Event("l2_alloc_cow_read")
	if err := readFile(img.file, t, old); err != nil {
		return 0, fmt.Errorf("qcow2: could not read the shared L2 table at %#x: %w", old, err)
	}
	for i := 0; i < len(t); i += 8 * img.entryWords {
		binary.BigEndian.PutUint64(t[i:], binary.BigEndian.Uint64(t[i:])&^flagCopied)
	}
	nw, err := img.rc.alloc()
	if err != nil {
		return 0, err
	}
	img.file.Event("l2_alloc_write")
	if err := img.checkedWrite(t, nw, 0); err != nil {
		img.rc.release(nw/cs, 1)
		return 0, err
	}
	if err := img.syncRefcounts(); err != nil {
		img.rc.release(nw/cs, 1)
		return 0, err
	}
	for s := int64(0); s < cs; s += img.sliceBytes {
		img.cache.put(nw+s, append([]byte(nil), t[s:s+img.sliceBytes]...), false)
	}
	if err := img.setL1(l1i, uint64(nw)|flagCopied); err != nil {
		img.rc.release(nw/cs, 1)
		return 0, err
	}
	if err := img.syncFile(); err != nil {
		return 0, err
	}
	return nw, img.rc.add(old/cs, -1)
}
