package qcow2

// Rewriting the snapshot table (QEMU's qcow2_write_snapshots): the new
// table goes to fresh clusters, durable before the header points to it
// (one sector write of nb_snapshots and snapshots_offset), and the old
// table's clusters are freed after. A crash at any point leaves either
// table whole, at worst with leaked clusters.

import (
	"encoding/binary"
	"fmt"
)

// snapshotEntries returns the snapshot table's entries as they are on
// disk, unknown extra data included, in table order.
func (img *image) snapshotEntries() ([][]byte, error) {
	var spans [][2]int64
	var end int64
	for _, sn := range img.snapshots {
		end = (end + 7) &^ 7
		n := snapshotHeaderSize + int64(sn.ExtraSize) + int64(len(sn.ID)) + int64(len(sn.Name))
		spans = append(spans, [2]int64{end, n})
		end += n
	}
	tbl := make([]byte, end)
	if err := readFile(img.file, tbl, int64(img.hdr.SnapshotsOffset)); err != nil {
		return nil, fmt.Errorf("qcow2: could not read the snapshot table: %w", err)
	}
	entries := make([][]byte, len(spans))
	for i, s := range spans {
		entries[i] = tbl[s[0] : s[0]+s[1]]
	}
	return entries, nil
}

// snapshotTableSize is the bytes of the table on disk.
func (img *image) snapshotTableSize() int64 {
	var end int64
	for _, sn := range img.snapshots {
		end = (end+7)&^7 + snapshotHeaderSize + int64(sn.ExtraSize) + int64(len(sn.ID)) + int64(len(sn.Name))
	}
	return end
}

// snapshotDiskSize is the guest size recorded in a raw entry; an entry
// without one (older images) is taken as of the image's size, as QEMU
// does.
func (img *image) snapshotDiskSize(raw []byte, sn snapshot) int64 {
	if sn.ExtraSize >= 16 {
		return int64(binary.BigEndian.Uint64(raw[snapshotHeaderSize+8:]))
	}
	return img.length
}

// encodeSnapshot is a new table entry as QEMU 7.2 writes it: 24 bytes of
// extra data (64-bit VM state size, disk size, icount).
func encodeSnapshot(sn snapshot, diskSize int64) []byte {
	be := binary.BigEndian
	b := make([]byte, snapshotHeaderSize+24+len(sn.ID)+len(sn.Name))
	be.PutUint64(b[0:], sn.L1TableOffset)
	be.PutUint32(b[8:], sn.L1Size)
	be.PutUint16(b[12:], uint16(len(sn.ID)))
	be.PutUint16(b[14:], uint16(len(sn.Name)))
	be.PutUint32(b[16:], sn.DateSec)
	be.PutUint32(b[20:], sn.DateNsec)
	be.PutUint64(b[24:], sn.VMClockNsec)
	be.PutUint32(b[32:], uint32(min(sn.VMStateSize, 0xffffffff)))
	be.PutUint32(b[36:], 24)
	be.PutUint64(b[40:], sn.VMStateSize)
	be.PutUint64(b[48:], uint64(diskSize))
	be.PutUint64(b[56:], uint64(sn.Icount))
	copy(b[64:], sn.ID)
	copy(b[64+len(sn.ID):], sn.Name)
	return b
}

// writeSnapshotTable replaces the snapshot table by entries (snaps is
// what they decode to).
func (img *image) writeSnapshotTable(entries [][]byte, snaps []snapshot) error {
	return img.writeSnapshotTableFreeing(entries, snaps, img.snapshotTableSize())
}

// writeSnapshotTableFreeing is writeSnapshotTable freeing oldSize bytes
// of the old table (a repair's: more than its entries now say).
func (img *image) writeSnapshotTableFreeing(entries [][]byte, snaps []snapshot, oldSize int64) error {
	cs := img.clusterSize
	var tbl []byte
	for i, e := range entries {
		// QEMU writes every entry with at least the 24 bytes of extra
		// data it knows (disk size from the entry, else the image's).
		if snaps[i].ExtraSize < 24 {
			e = encodeSnapshot(snaps[i], img.snapshotDiskSize(e, snaps[i]))
			snaps[i].ExtraSize = 24
		}
		for len(tbl)%8 != 0 {
			tbl = append(tbl, 0)
		}
		tbl = append(tbl, e...)
	}
	if int64(len(tbl)) > maxSnapshotTable {
		return fmt.Errorf("qcow2: the snapshot table would be too big")
	}
	oldOff := int64(img.hdr.SnapshotsOffset)
	var newOff int64
	if len(tbl) > 0 {
		n := (int64(len(tbl)) + cs - 1) / cs
		off, err := img.allocSnapshotMeta(n)
		if err != nil {
			return err
		}
		buf := make([]byte, n*cs)
		copy(buf, tbl)
		if err := img.checkedWrite(buf, off, 0); err != nil {
			img.rc.release(off/cs, n)
			return err
		}
		if err := img.syncAll(); err != nil {
			img.rc.release(off/cs, n)
			return err
		}
		newOff = off
	}
	var b [12]byte
	binary.BigEndian.PutUint32(b[0:], uint32(len(entries)))
	binary.BigEndian.PutUint64(b[4:], uint64(newOff))
	if err := img.patchHeader(60, b[:]); err != nil {
		return fmt.Errorf("qcow2: could not write the header: %w", err)
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	img.hdr.NbSnapshots, img.hdr.SnapshotsOffset = uint32(len(entries)), uint64(newOff)
	img.snapshots = snaps
	if oldSize > 0 {
		img.freeClusters(oldOff, oldSize) // snapshot_free.go
	}
	var err error
	img.snap, err = img.loadSnapMeta()
	img.metaChanged()
	return err
}

// syncAll writes the refcounts held in memory (also lazy ones) and
// flushes: what is written next may point to what they count.
func (img *image) syncAll() error {
	if err := img.rc.writeBack(); err != nil {
		return err
	}
	return img.syncFile()
}

// addRef changes the refcount of cluster k; a freed cluster may be
// allocated again.
func (img *image) addRef(k, delta int64) error {
	if err := img.rc.add(k, delta); err != nil {
		return err
	}
	if delta < 0 {
		img.rc.hint = min(img.rc.hint, k)
	}
	return nil
}
