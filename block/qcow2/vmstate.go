package qcow2

// The VM state area, as QEMU keeps it (qcow2_save_vmstate and
// qcow2_load_vmstate): ordinary clusters mapped by the L1/L2 tables at
// guest offsets from the first L1 entry the disk does not need on. The
// guest never sees them and the disk size does not change; the L1 table
// grows to cover them. Reads and writes there take the guest data path
// (allocation, COW, refcounts), so they are as crash-safe as any guest
// write: data and L2 entries are ordered by the same write-back, and the
// L1 table is only ever replaced whole (new table written and synced
// before the header points to it).

import (
	"math"

	"golang.org/x/sys/unix"
)

// vmStateOffset is qcow2_vm_state_offset: the disk size rounded up to
// what one L1 entry maps.
func (img *image) vmStateOffset() int64 {
	per := img.clusterSize << img.l2Bits
	return (img.length + per - 1) / per * per
}

// vmStateRange is the guest range of pos, n in the VM state area: EIO
// for a negative one or one past what int64 holds, as QEMU's request
// check; for a write, EFBIG past what the largest L1 table maps (QEMU's
// qcow2_grow_l1_table refuses it so; reads there find zeroes).
func (img *image) vmStateRange(pos, n int64, write bool) (int64, error) {
	base := img.vmStateOffset()
	if pos < 0 || n < 0 || pos > math.MaxInt64-base || n > math.MaxInt64-base-pos {
		return 0, unix.EIO
	}
	reach := int64(maxL1Bytes/8) << (img.clusterBits + img.l2Bits)
	if write && base+pos+n > reach {
		return 0, unix.EFBIG
	}
	return base + pos, nil
}

// ReadVMState reads VM state at pos (bytes from the start of the area).
// Unwritten parts read as the backing file there, if any, else zeroes.
func (img *image) ReadVMState(p []byte, pos int64) (int, error) {
	if img.dead.Load() {
		return 0, errDead
	}
	off, err := img.vmStateRange(pos, int64(len(p)), false)
	if err != nil {
		return 0, err
	}
	img.file.Event("vmstate_load")
	n, err := img.readAt(p, off)
	if err != nil {
		img.signalCorruption(err)
	}
	return n, err
}

// WriteVMState writes VM state at pos, growing the L1 table first when
// it does not reach that far.
func (img *image) WriteVMState(p []byte, pos int64) (int, error) {
	if img.dead.Load() {
		return 0, errDead
	}
	off, err := img.vmStateRange(pos, int64(len(p)), true)
	if err != nil {
		return 0, err
	}
	img.file.Event("vmstate_save")
	if len(p) == 0 {
		return 0, nil
	}
	if err := img.begin(); err != nil {
		return 0, err
	}
	defer img.wmu.Unlock()
	need := (off+int64(len(p))-1)>>(img.clusterBits+img.l2Bits) + 1
	if need > int64(img.hdr.L1Size) {
		size := vmStateL1Size(int64(img.hdr.L1Size), need)
		if size > maxL1Bytes/8 {
			return 0, unix.EFBIG
		}
		if err := img.growL1(size); err != nil {
			return 0, err
		}
	}
	if err := img.writeLocked(p, off); err != nil {
		img.signalCorruptionLocked(err)
		return 0, err
	}
	return len(p), nil
}

// vmStateL1Size is qcow2_grow_l1_table's size when not exact: the
// current one grown by half until it holds need entries (fewer moves of
// the table for a VM state written in pieces).
func vmStateL1Size(cur, need int64) int64 {
	n := max(cur, 1)
	for n < need {
		n = (n*3 + 1) / 2
	}
	return n
}
