package qcow2

// Creating, applying and deleting internal snapshots (qemu-img snapshot
// -c/-a/-d; QEMU's qcow2_snapshot_create/goto/delete). Each runs with
// the image to itself (the caller's: no request in flight), after
// everything held in memory is written back, and orders its writes so
// that a crash leaves at worst leaked clusters or a COPIED flag missing
// where the refcount is 1 (both what `check -r` repairs, neither a
// write into what a snapshot shares):
//   - create: COPIED cleared on the active tables, the L1 copy written,
//     every cluster's refcount raised, then the new snapshot table;
//   - apply: the snapshot's refcounts raised, its L1 copied to fresh
//     clusters, the header switched to it (size, L1 size and offset in
//     one sector), then the old active state's references dropped;
//   - delete: the table without the entry, then its references dropped,
//     then COPIED set where a refcount came down to 1.

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// ErrSnapshotNotFound is a snapshot that no entry has (ENOENT, as QEMU).
var ErrSnapshotNotFound = fmt.Errorf("qcow2: snapshot not found: %w", unix.ENOENT)

// errTooManySnapshots is QEMU's EFBIG for a full table.
var errTooManySnapshots = fmt.Errorf("qcow2: too many snapshots: %w", unix.EFBIG)

// snapshotOp runs op with the write lock held and nothing of the write
// path pending; the L2 cache is dropped after, as tables moved.
func (img *image) snapshotOp(op func() error) error {
	if img.external() {
		return errDataFileSnap // QEMU: no internal snapshots with a data file
	}
	if err := img.begin(); err != nil {
		return err
	}
	defer img.wmu.Unlock()
	if err := img.writeBack(); err != nil {
		return err
	}
	if err := img.syncAll(); err != nil {
		return err
	}
	// References dropped within are the snapshots' (pass-discard-snapshot).
	img.rc.reason = discardSnapshot
	endBatch := img.rc.batchDiscards()
	err := op()
	endBatch()
	img.rc.reason = discardOther
	old := img.cache
	img.cache = newL2Cache(int(img.sliceBytes), img.cache.max, img.cache.load)
	// Changes a failed op left in memory are written back later.
	for off := range img.l2Dirty {
		if t, gerr := old.get(off); gerr == nil {
			img.cache.put(off, t, true)
		}
	}
	img.compressed = newClusterCache(img.clusterSize)
	img.metaChanged()
	return err
}

// CreateSnapshot adds an internal snapshot of the active state named
// name, with the next free numeric ID, dated at.
func (img *image) CreateSnapshot(name string, at time.Time) error {
	return img.snapshotOp(func() error { return img.createSnapshot(name, at) })
}

func (img *image) createSnapshot(name string, at time.Time) error {
	if len(img.snapshots) >= maxSnapshots {
		return errTooManySnapshots
	}
	if len(name) > 0xffff {
		return fmt.Errorf("qcow2: snapshot name too long: %w", unix.EINVAL)
	}
	entries, err := img.snapshotEntries()
	if err != nil {
		return err
	}
	cs := img.clusterSize
	img.l1mu.RLock()
	l1 := append([]uint64(nil), img.l1...)
	img.l1mu.RUnlock()
	if err := img.refRoom(l1); err != nil {
		return err
	}
	// COPIED cleared first: until the refcounts are raised, a missing
	// flag only makes the write path copy what it owns.
	if err := img.setCopied(func(int64) (bool, error) { return false, nil }); err != nil {
		return err
	}
	img.l1mu.RLock()
	l1 = append([]uint64(nil), img.l1...)
	img.l1mu.RUnlock()
	n := max((int64(len(l1))*8+cs-1)/cs, 1)
	l1Off, err := img.allocSnapshotMeta(n)
	if err != nil {
		return err
	}
	if err := img.checkedWrite(encodeL1(l1, n*cs), l1Off, 0); err != nil {
		img.rc.release(l1Off/cs, n)
		return err
	}
	if err := img.addRefs(l1, 1); err != nil {
		return err
	}
	if err := img.syncAll(); err != nil {
		return err
	}
	sn := snapshot{L1TableOffset: uint64(l1Off), L1Size: uint32(len(l1)), ExtraSize: 24, SnapshotInfo: SnapshotInfo{
		ID: nextSnapshotID(img.snapshots), Name: name,
		DateSec: uint32(at.Unix()), DateNsec: uint32(at.Nanosecond() / 1000 * 1000),
	}}
	snaps := append(append([]snapshot(nil), img.snapshots...), sn)
	return img.writeSnapshotTable(append(entries, encodeSnapshot(sn, img.length)), snaps)
}

// nextSnapshotID is QEMU's find_new_snapshot_id: one past the largest
// numeric ID (each read as strtoul does: leading digits, else 0).
func nextSnapshotID(snaps []snapshot) string {
	var top uint64
	for _, sn := range snaps {
		i := 0
		for i < len(sn.ID) && sn.ID[i] >= '0' && sn.ID[i] <= '9' {
			i++
		}
		if v, err := strconv.ParseUint(sn.ID[:i], 10, 64); err == nil && v > top {
			top = v
		}
	}
	return strconv.FormatUint(top+1, 10)
}

// encodeL1 is an L1 table on disk, COPIED cleared (what it points to is
// shared), padded to size bytes.
func encodeL1(l1 []uint64, size int64) []byte {
	b := make([]byte, size)
	for i, e := range l1 {
		binary.BigEndian.PutUint64(b[8*i:], e&^flagCopied)
	}
	return b
}

// readL1 reads an L1 table of n entries at off.
func (img *image) readL1(off int64, n uint32) ([]uint64, error) {
	raw := make([]byte, int64(n)*8)
	if err := readFile(img.file, raw, off); err != nil {
		return nil, fmt.Errorf("qcow2: could not read the L1 table at %#x: %w", off, err)
	}
	l1 := make([]uint64, n)
	for i := range l1 {
		l1[i] = binary.BigEndian.Uint64(raw[8*i:])
	}
	return l1, nil
}

// errRefcountOverflow is a snapshot operation that would raise a
// refcount past what refcount_bits holds (QEMU fails it with EINVAL,
// after changing part of the image; here it is refused first).
var errRefcountOverflow = fmt.Errorf("qcow2: refcount overflow: %w", unix.EINVAL)

// refRoom says whether raising by one every refcount addRefs(l1, 1)
// would raise stays within the refcount width, changing nothing.
func (img *image) refRoom(l1 []uint64) error {
	need := map[int64]uint64{}
	if err := img.walkRefs(l1, func(k int64) error { need[k]++; return nil }); err != nil {
		return err
	}
	for k, n := range need {
		v, err := img.rc.get(k)
		if err != nil {
			return err
		}
		if v+n > img.rc.max || v+n < v {
			return errRefcountOverflow
		}
	}
	return nil
}

// addRefs changes by delta the refcount of every L2 table of l1 and of
// every cluster they reference (QEMU's qcow2_update_snapshot_refcount).
func (img *image) addRefs(l1 []uint64, delta int64) error {
	return img.walkRefs(l1, func(k int64) error { return img.addRef(k, delta) })
}

// walkRefs calls ref for every cluster reference l1 holds: its L2
// tables and what they reference.
func (img *image) walkRefs(l1 []uint64, ref func(k int64) error) error {
	cs := img.clusterSize
	t := make([]byte, cs)
	for i, l1e := range l1 {
		off := int64(l1e & offsetMask)
		if off == 0 {
			continue
		}
		if l1e&l1Reserved != 0 || off&(cs-1) != 0 {
			return corrupt("L1 entry %#x at index %#x is invalid", l1e, i)
		}
		if err := readFile(img.file, t, off); err != nil {
			return fmt.Errorf("qcow2: could not read the L2 table at %#x: %w", off, err)
		}
		for j := 0; j < len(t); j += 8 * img.entryWords {
			e := binary.BigEndian.Uint64(t[j:])
			if e&flagCompressed != 0 {
				coff, size := img.compressedRange(e)
				for c := coff / cs; c <= (coff+size-1)/cs; c++ {
					if err := ref(c); err != nil {
						return err
					}
				}
			} else if o := int64(e & offsetMask); o != 0 {
				if err := ref(o / cs); err != nil {
					return err
				}
			}
		}
		if err := ref(off / cs); err != nil {
			return err
		}
	}
	return nil
}

// setCopied sets or clears COPIED on the active L1 and L2 entries as
// copied says for a cluster index, writing what changed (L2 tables,
// flushed, then the L1 table). Every table is scanned, so that one
// that became shared loses the flags of its entries.
func (img *image) setCopied(copied func(k int64) (bool, error)) error {
	cs := img.clusterSize
	img.l1mu.RLock()
	l1 := append([]uint64(nil), img.l1...)
	img.l1mu.RUnlock()
	newL1 := append([]uint64(nil), l1...)
	t := make([]byte, cs)
	wroteL2 := false
	for i, l1e := range l1 {
		off := int64(l1e & offsetMask)
		if off == 0 {
			continue
		}
		own, err := copied(off / cs)
		if err != nil {
			return err
		}
		newL1[i] = l1e &^ flagCopied
		if own {
			newL1[i] |= flagCopied
		}
		if err := readFile(img.file, t, off); err != nil {
			return fmt.Errorf("qcow2: could not read the L2 table at %#x: %w", off, err)
		}
		changed := false
		for j := 0; j < len(t); j += 8 * img.entryWords {
			e := binary.BigEndian.Uint64(t[j:])
			o := int64(e & offsetMask)
			if e&flagCompressed != 0 || o == 0 {
				continue
			}
			want := false
			if own {
				if want, err = copied(o / cs); err != nil {
					return err
				}
			}
			ne := e &^ flagCopied
			if want {
				ne |= flagCopied
			}
			if ne != e {
				binary.BigEndian.PutUint64(t[j:], ne)
				changed = true
			}
		}
		if changed {
			if err := img.checkedWrite(t, off, olL2); err != nil {
				return err
			}
			wroteL2 = true
		}
	}
	if wroteL2 {
		if err := img.syncFile(); err != nil {
			return err
		}
	}
	if slicesEqual(l1, newL1) {
		return nil
	}
	b := make([]byte, (int64(len(newL1))*8+511)&^511)
	for i, e := range newL1 {
		binary.BigEndian.PutUint64(b[8*i:], e)
	}
	if err := img.checkedWrite(b, int64(img.hdr.L1TableOffset), olL1); err != nil {
		return err
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	img.l1mu.Lock()
	img.l1 = newL1
	img.l1mu.Unlock()
	return nil
}

func slicesEqual(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// findSnapshot is QEMU's find_snapshot_by_id_or_name: by ID first, then
// by name.
func (img *image) findSnapshot(idOrName string) int {
	for i, sn := range img.snapshots {
		if sn.ID == idOrName {
			return i
		}
	}
	for i, sn := range img.snapshots {
		if sn.Name == idOrName {
			return i
		}
	}
	return -1
}

// ApplySnapshot makes the snapshot with ID or name idOrName the active
// state, its guest size included (QEMU truncates to it first).
func (img *image) ApplySnapshot(idOrName string) error {
	return img.snapshotOp(func() error { return img.applySnapshot(idOrName) })
}

func (img *image) applySnapshot(idOrName string) error {
	i := img.findSnapshot(idOrName)
	if i < 0 {
		return ErrSnapshotNotFound
	}
	entries, err := img.snapshotEntries()
	if err != nil {
		return err
	}
	sn := img.snapshots[i]
	if err := img.checkSnapshotL1(sn); err != nil {
		return err
	}
	size := img.snapshotDiskSize(entries[i], sn)
	cs := img.clusterSize
	snL1, err := img.readL1(int64(sn.L1TableOffset), sn.L1Size)
	if err != nil {
		return err
	}
	perL1 := cs << img.l2Bits
	need := (size + perL1 - 1) / perL1
	if need > maxL1Bytes/8 {
		return corrupt("snapshot %s (%s) has an invalid disk size %d", sn.ID, sn.Name, size)
	}
	for int64(len(snL1)) < need {
		snL1 = append(snL1, 0)
	}
	for k := range snL1 {
		snL1[k] &^= flagCopied // shared with the snapshot from now on
	}
	if err := img.refRoom(snL1); err != nil {
		return err
	}
	if err := img.addRefs(snL1, 1); err != nil {
		return err
	}
	if err := img.syncAll(); err != nil {
		return err
	}
	n := max((int64(len(snL1))*8+cs-1)/cs, 1)
	l1Off, err := img.rc.allocContiguous(n)
	if err != nil {
		return err
	}
	if err := img.checkedWrite(encodeL1(snL1, n*cs), l1Off, 0); err != nil {
		img.rc.release(l1Off/cs, n)
		return err
	}
	if err := img.syncAll(); err != nil {
		return err
	}
	var b [24]byte
	binary.BigEndian.PutUint64(b[0:], uint64(size))
	binary.BigEndian.PutUint32(b[12:], uint32(len(snL1)))
	binary.BigEndian.PutUint64(b[16:], uint64(l1Off))
	// bytes 8-11 are crypt_method, kept
	binary.BigEndian.PutUint32(b[8:], img.hdr.CryptMethod)
	if err := img.patchHeader(24, b[:]); err != nil {
		return fmt.Errorf("qcow2: could not write the header: %w", err)
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	img.l1mu.Lock()
	oldL1, oldOff, oldSize := img.l1, int64(img.hdr.L1TableOffset), int64(img.hdr.L1Size)*8
	img.l1 = snL1
	img.hdr.Size, img.hdr.L1Size, img.hdr.L1TableOffset = uint64(size), uint32(len(snL1)), uint64(l1Off)
	img.length = size
	img.l1mu.Unlock()
	img.metaChanged()
	if err := img.addRefs(oldL1, -1); err != nil {
		return err
	}
	for k := oldOff / cs; k < (oldOff+max(oldSize, 1)+cs-1)/cs; k++ {
		if err := img.addRef(k, -1); err != nil {
			return err
		}
	}
	return img.syncAll()
}

// DeleteSnapshot removes the snapshot with both this ID and name (QEMU
// finds it by name first, then deletes by both).
func (img *image) DeleteSnapshot(id, name string) error {
	return img.snapshotOp(func() error { return img.deleteSnapshot(id, name) })
}

func (img *image) deleteSnapshot(id, name string) error {
	i := -1
	for j, sn := range img.snapshots {
		if sn.ID == id && sn.Name == name {
			i = j
			break
		}
	}
	if i < 0 {
		return ErrSnapshotNotFound
	}
	entries, err := img.snapshotEntries()
	if err != nil {
		return err
	}
	sn := img.snapshots[i]
	if err := img.checkSnapshotL1(sn); err != nil {
		return err
	}
	// In QEMU's order (qcow2_snapshot_delete): the snapshot is gone from
	// the table first; a failure after that leaks its clusters.
	snaps := append(append([]snapshot(nil), img.snapshots[:i]...), img.snapshots[i+1:]...)
	if err := img.writeSnapshotTable(append(entries[:i:i], entries[i+1:]...), snaps); err != nil {
		return &StepError{"Failed to remove snapshot from snapshot list", err}
	}
	snL1, err := img.readL1(int64(sn.L1TableOffset), sn.L1Size)
	if err == nil {
		err = img.dropSnapshotRefs(snL1)
	}
	if err == nil {
		err = img.syncAll()
	}
	if err != nil {
		return &StepError{"Failed to free the cluster and L1 table", err}
	}
	img.freeClusters(int64(sn.L1TableOffset), int64(sn.L1Size)*8)
	if err := img.syncAll(); err != nil {
		return &StepError{"Failed to update snapshot status in disk", err}
	}
	err = img.setCopied(func(k int64) (bool, error) {
		v, err := img.rc.get(k)
		return v == 1, err
	})
	if err != nil {
		return &StepError{"Failed to update snapshot status in disk", err}
	}
	return nil
}
