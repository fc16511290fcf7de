package qcow2

// Reading an internal snapshot in place of the active state (qemu-img
// convert -l; QEMU's qcow2_snapshot_load_tmp): the snapshot's L1 table
// replaces the active one in memory, on an image opened read-only. The
// guest size stays the active state's, as in QEMU 7.2 (whose convert -l
// of a snapshot taken at another size copies the current size).

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrSnapshotLoadWritable is a snapshot loaded over an image open for
// writing.
var ErrSnapshotLoadWritable = fmt.Errorf("qcow2: internal snapshots can only be loaded read-only: %w", unix.ENOTSUP)

// LoadSnapshot shows the first snapshot match accepts (by ID and name)
// in place of the active state, until the image is closed.
func (img *image) LoadSnapshot(match func(id, name string) bool) error {
	if img.writable {
		return ErrSnapshotLoadWritable
	}
	i := -1
	for j, sn := range img.snapshots {
		if match(sn.ID, sn.Name) {
			i = j
			break
		}
	}
	if i < 0 {
		return ErrSnapshotNotFound
	}
	sn := img.snapshots[i]
	if err := img.checkSnapshotL1(sn); err != nil {
		return err
	}
	l1, err := img.readL1(int64(sn.L1TableOffset), sn.L1Size)
	if err != nil {
		return err
	}
	img.l1mu.Lock()
	img.l1 = l1
	img.l1mu.Unlock()
	img.cache = newL2Cache(int(img.sliceBytes), img.cache.max, img.cache.load)
	return nil
}

// checkSnapshotL1 is QEMU's qcow2_validate_table of a snapshot's L1 table
// before it is used, in its words ("Snapshot L1 table offset invalid",
// "Snapshot L1 table too large"), with its errno.
func (img *image) checkSnapshotL1(sn snapshot) error {
	err := img.hdr.validateTable(sn.L1TableOffset, uint64(sn.L1Size), 8, maxL1Bytes, "Snapshot L1 table")
	if err == nil {
		return nil
	}
	errno := unix.EINVAL
	if int64(sn.L1Size)*8 > maxL1Bytes {
		errno = unix.EFBIG
	}
	return &snapshotL1Error{msg: err.Error(), errno: errno}
}

// snapshotL1Error is a snapshot L1 table QEMU's validation refuses: its
// message, and the errno QEMU returns with it.
type snapshotL1Error struct {
	msg   string
	errno unix.Errno
}

func (e *snapshotL1Error) Error() string { return e.msg }

// Reported says that QEMU prints this error where it finds it
// (error_report_err), before its caller's own message.
func (e *snapshotL1Error) Reported() bool { return true }
func (e *snapshotL1Error) Unwrap() error  { return e.errno }
