package qcow2

import (
	"encoding/binary"
	"fmt"
)

// snapshot is one internal snapshot's entry of the snapshot table. The
// read path does not use snapshots; they are read to apply QEMU's limits
// at open and kept for queries and a writer.
type snapshot struct {
	L1TableOffset uint64
	L1Size        uint32
	ExtraSize     uint32
	SnapshotInfo
}

// readSnapshots walks the snapshot table as QEMU's qcow2_read_snapshots
// does: entries are 8-byte aligned, each a 40-byte header, extra data (at
// most 1 KiB), an id and a name; the whole table at most 64 MiB. It reads
// through r (which reads zeroes past the end of the file) in chunks, so
// what it allocates is bounded by the limits, not by the header's claims.
func readSnapshots(r *chunkReader, h *header) ([]snapshot, error) {
	if h.NbSnapshots == 0 {
		return nil, nil
	}
	be := binary.BigEndian
	r.base = int64(h.SnapshotsOffset)
	var off int64 // from the start of the table
	snaps := make([]snapshot, 0, min(h.NbSnapshots, 1024))
	var hdr [snapshotHeaderSize]byte
	var extra [24]byte
	for i := 0; i < int(h.NbSnapshots); i++ {
		off = (off + 7) &^ 7
		if err := r.read(hdr[:], off); err != nil {
			return nil, fmt.Errorf("Failed to read snapshot table: %w", err)
		}
		off += snapshotHeaderSize
		sn, idLen, nameLen := decodeSnapshotHeader(&hdr)
		if sn.ExtraSize > maxSnapshotExtra {
			// QEMU's message and, on the next line, its hint.
			return nil, fmt.Errorf("Too much extra metadata in snapshot table entry %d\nYou can force-remove this extra metadata with qemu-img check -r all", i)
		}
		// The extra data QEMU 7.2 knows: a 64-bit VM state size, the disk
		// size and the icount; an older or shorter entry lacks the later.
		if n := min(sn.ExtraSize, uint32(len(extra))); n > 0 {
			if err := r.read(extra[:n], off); err != nil {
				return nil, fmt.Errorf("Failed to read snapshot table: %w", err)
			}
			if n >= 8 {
				sn.VMStateSize = be.Uint64(extra[0:])
			}
			if n >= 24 {
				sn.Icount = int64(be.Uint64(extra[16:]))
			}
		}
		off += int64(sn.ExtraSize)
		str := make([]byte, idLen+nameLen)
		if err := r.read(str, off); err != nil {
			return nil, fmt.Errorf("Failed to read snapshot table: %w", err)
		}
		off += idLen + nameLen
		sn.ID, sn.Name = string(str[:idLen]), string(str[idLen:])
		if off > maxSnapshotTable {
			return nil, fmt.Errorf("Snapshot table is too big\nYou can force-remove all %d overhanging snapshots with qemu-img check -r all", int(h.NbSnapshots)-i)
		}
		snaps = append(snaps, sn)
	}
	return snaps, nil
}

// decodeSnapshotHeader reads a snapshot table entry's fixed part: the
// snapshot it describes, and the lengths of the ID and name after it.
func decodeSnapshotHeader(hdr *[snapshotHeaderSize]byte) (sn snapshot, idLen, nameLen int64) {
	be := binary.BigEndian
	sn = snapshot{
		L1TableOffset: be.Uint64(hdr[0:]),
		L1Size:        be.Uint32(hdr[8:]),
		ExtraSize:     be.Uint32(hdr[36:]),
		SnapshotInfo: SnapshotInfo{
			DateSec: be.Uint32(hdr[16:]), DateNsec: be.Uint32(hdr[20:]),
			VMClockNsec: be.Uint64(hdr[24:]), VMStateSize: uint64(be.Uint32(hdr[32:])),
			Icount: -1,
		},
	}
	return sn, int64(be.Uint16(hdr[12:])), int64(be.Uint16(hdr[14:]))
}
