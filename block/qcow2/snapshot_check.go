package qcow2

// The snapshot table under qemu-img check (QEMU's
// qcow2_check_read_snapshot_table and qcow2_check_fix_snapshot_table):
// the table is read apart from the open, which skips it in check mode,
// so that a table the open refuses can be checked and, under -r all,
// repaired. Too many snapshots, or a table too big, lose the snapshots
// past the limit (the header's count lowered at once: their clusters
// leak, and the refcount check frees them); too much extra data is cut to
// the limit, and entries of a version 3 image without the 16 bytes of
// extra data it requires are completed, both by rewriting the table after
// the refcount check (it allocates clusters).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"minivmm/block"
)

// CheckReportError is a check that failed on what it had to read: QEMU's
// error_report message (the tool prefixes its name), a hint printed
// after it as it is, and what the check failed with.
type CheckReportError struct {
	Msg, Hint string
	Err       error
}

func (e *CheckReportError) Error() string { return e.Err.Error() }
func (e *CheckReportError) Unwrap() error { return e.Err }

var (
	errCheckTooBig = errors.New("File too large")
	errCheckInval  = errors.New("Invalid argument")
)

// checkedSnapshots is the snapshot table as the check read it.
type checkedSnapshots struct {
	snaps     []snapshot
	diskSizes []int64  // per snapshot: the disk size recorded, else the image's
	unknown   [][]byte // per snapshot: extra data past the 24 bytes QEMU 7.2 knows
	size      int64    // bytes from the table's start to the end of its last entry
	reduced   int64    // snapshots dropped off the end
	dropped   int64    // entries whose extra data was cut
}

// readCheckSnapshots is qcow2_do_read_snapshots: with repair, a table too
// big loses its overhanging snapshots and too much extra data is cut,
// where without it they are errors (with QEMU's hints).
func readCheckSnapshots(file *block.Node, h *header, nb uint32, repair bool, log func(string, ...any)) (*checkedSnapshots, error) {
	cs := &checkedSnapshots{}
	if nb == 0 {
		return cs, nil
	}
	be := binary.BigEndian
	r := newChunkReader(file)
	r.base = int64(h.SnapshotsOffset)
	var off, tableLen int64 // from the table's start
	var hdr [snapshotHeaderSize]byte
	var extra [24]byte
	for i := int64(0); i < int64(nb); i++ {
		pre := off
		tableLen = (tableLen + 7) &^ 7
		off = (off + 7) &^ 7
		if err := r.read(hdr[:], off); err != nil {
			return nil, fmt.Errorf("Failed to read snapshot table: %w", err)
		}
		off += snapshotHeaderSize
		sn, idLen, nameLen := decodeSnapshotHeader(&hdr)
		truncate := false
		if sn.ExtraSize > maxSnapshotExtra {
			if !repair {
				return nil, &CheckReportError{
					Msg:  fmt.Sprintf("Too much extra metadata in snapshot table entry %d", i),
					Hint: "You can force-remove this extra metadata with qemu-img check -r all\n",
					Err:  errCheckTooBig,
				}
			}
			log("Discarding too much extra metadata in snapshot table entry %d (%d > %d)\n", i, sn.ExtraSize, maxSnapshotExtra)
			cs.dropped++
			truncate = true
		}
		n := min(int64(sn.ExtraSize), int64(len(extra)))
		clear(extra[:])
		if err := r.read(extra[:n], off); err != nil {
			return nil, fmt.Errorf("Failed to read snapshot table: %w", err)
		}
		off += n
		if n >= 8 {
			sn.VMStateSize = be.Uint64(extra[0:])
		}
		disk := int64(h.Size)
		if n >= 16 {
			disk = int64(be.Uint64(extra[8:]))
		}
		if n >= 24 {
			sn.Icount = int64(be.Uint64(extra[16:]))
		}
		var unknown []byte
		if sn.ExtraSize > 24 {
			end := off + int64(sn.ExtraSize) - 24
			if truncate {
				sn.ExtraSize = maxSnapshotExtra
			}
			unknown = make([]byte, sn.ExtraSize-24)
			if err := r.read(unknown, off); err != nil {
				return nil, fmt.Errorf("Failed to read snapshot table: %w", err)
			}
			off = end
		}
		str := make([]byte, idLen+nameLen)
		if err := r.read(str, off); err != nil {
			return nil, fmt.Errorf("Failed to read snapshot table: %w", err)
		}
		off += idLen + nameLen
		sn.ID, sn.Name = string(str[:idLen]), string(str[idLen:])
		tableLen += snapshotHeaderSize + int64(sn.ExtraSize) + idLen + nameLen
		if tableLen > maxSnapshotTable || off > math.MaxInt32 {
			if !repair {
				return nil, &CheckReportError{
					Msg:  "Snapshot table is too big",
					Hint: fmt.Sprintf("You can force-remove all %d overhanging snapshots with qemu-img check -r all\n", int64(nb)-i),
					Err:  errCheckTooBig,
				}
			}
			log("Discarding %d overhanging snapshots (snapshot table is too big)\n", int64(nb)-i)
			cs.reduced += int64(nb) - i
			off = pre
			break
		}
		cs.snaps = append(cs.snaps, sn)
		cs.diskSizes = append(cs.diskSizes, disk)
		cs.unknown = append(cs.unknown, unknown)
	}
	cs.size = off
	return cs, nil
}

// checkSnapshotTable is qcow2_check_read_snapshot_table: it reads the
// table for the check, counting in res what it finds, and under FixErrors
// lowers the header's snapshot count at once where snapshots overhang.
func (c *checker) checkSnapshotTable() (*checkedSnapshots, error) {
	h := c.hdr
	nb := h.NbSnapshots
	var reduced int64
	if nb > maxSnapshots && c.fix&FixErrors != 0 {
		c.printf("Discarding %d overhanging snapshots\n", nb-maxSnapshots)
		reduced = int64(nb - maxSnapshots)
		nb = maxSnapshots
	}
	if err := h.validateTable(h.SnapshotsOffset, uint64(nb), snapshotHeaderSize, snapshotHeaderSize*maxSnapshots, "snapshot table"); err != nil {
		c.snapRes.CheckErrors++
		e := &CheckReportError{Msg: "ERROR " + err.Error(), Err: errCheckInval}
		if strings.HasSuffix(err.Error(), "too large") {
			e.Err = errCheckTooBig
		}
		if nb > maxSnapshots {
			e.Hint = fmt.Sprintf("You can force-remove all %d overhanging snapshots with qemu-img check -r all\n", nb-maxSnapshots)
		}
		return nil, e
	}
	cs, err := readCheckSnapshots(c.file, h, nb, c.fix&FixErrors != 0, c.printf)
	if err != nil {
		c.snapRes.CheckErrors++
		var re *CheckReportError
		if errors.As(err, &re) {
			re.Msg = "ERROR failed to read the snapshot table: " + re.Msg
			return nil, re
		}
		return nil, &CheckReportError{Msg: "ERROR failed to read the snapshot table: " + err.Error(), Err: errCheckIO}
	}
	cs.reduced += reduced
	c.snapRes.Corruptions += cs.reduced + cs.dropped
	if cs.reduced > 0 {
		nb = uint32(len(cs.snaps))
		sec := make([]byte, 512)
		err := readFile(c.file, sec, 0)
		if err == nil {
			binary.BigEndian.PutUint32(sec[60:], nb)
			if _, err = c.file.WriteAt(sec, 0); err == nil {
				err = c.file.Flush()
			}
		}
		if err != nil {
			c.snapRes.CheckErrors++
			c.printf("ERROR failed to update the snapshot count in the image header: %s\n", err)
			return nil, err
		}
		h.NbSnapshots = nb
		c.snapFixed += cs.reduced
		c.snapRes.Corruptions -= cs.reduced
	}
	if h.Version >= 3 {
		verb := "ERROR"
		if c.fix&FixErrors != 0 {
			verb = "Repairing"
		}
		for i, sn := range cs.snaps {
			if sn.ExtraSize < 16 {
				c.snapRes.Corruptions++
				c.printf("%s snapshot table entry %d is incomplete\n", verb, i)
			}
		}
	}
	return cs, nil
}

// fixSnapshotTable is qcow2_check_fix_snapshot_table: under FixErrors, a
// table with corruptions is written anew (every entry with at least the
// 24 bytes of extra data QEMU 7.2 writes), freeing the old one whole.
func (c *checker) fixSnapshotTable(img *image, cs *checkedSnapshots) error {
	if c.snapRes.Corruptions == 0 || c.fix&FixErrors == 0 {
		return nil
	}
	entries := make([][]byte, len(cs.snaps))
	snaps := make([]snapshot, len(cs.snaps))
	for i, sn := range cs.snaps {
		entries[i] = encodeSnapshotUnknown(sn, cs.diskSizes[i], cs.unknown[i])
		sn.ExtraSize = uint32(24 + len(cs.unknown[i]))
		snaps[i] = sn
	}
	if err := img.writeSnapshotTableFreeing(entries, snaps, cs.size); err != nil {
		c.snapRes.CheckErrors++
		c.printf("ERROR failed to update snapshot table: %s\n", err)
		return err
	}
	if err := img.rc.writeBack(); err != nil {
		return err
	}
	if err := c.file.Flush(); err != nil {
		return err
	}
	c.snapFixed += c.snapRes.Corruptions
	c.snapRes.Corruptions = 0
	return nil
}

// encodeSnapshotUnknown is encodeSnapshot keeping extra data QEMU 7.2
// does not know after the 24 bytes it does.
func encodeSnapshotUnknown(sn snapshot, diskSize int64, unknown []byte) []byte {
	b := encodeSnapshot(sn, diskSize)
	if len(unknown) == 0 {
		return b
	}
	binary.BigEndian.PutUint32(b[36:], uint32(24+len(unknown)))
	out := make([]byte, 0, len(b)+len(unknown))
	out = append(out, b[:snapshotHeaderSize+24]...)
	out = append(out, unknown...)
	return append(out, b[snapshotHeaderSize+24:]...)
}
