package qcow2

import "minivmm/block"

// WriteZeroesFast is qcow2_co_pwrite_zeroes under BDRV_REQ_NO_FALLBACK:
// on version 3, whole clusters (or, with extended L2, whole
// subclusters) get the zero flag, as WriteZeroes gives it; a partial one
// at either end is fine only if it reads as zeroes already, and a
// compressed cluster cut by the range is not; anything else is refused
// before a byte changes. Version 2 has no zero flag: always refused, as
// QEMU's qcow2 offers no NO_FALLBACK there.
func (img *image) WriteZeroesFast(off, n int64, unmap bool) error {
	if img.dead.Load() {
		return errDead
	}
	if err := img.begin(); err != nil {
		return err
	}
	defer img.wmu.Unlock()
	if img.hdr.Version < 3 {
		return block.ErrNotSupported
	}
	unit := img.clusterSize
	if img.extL2 {
		unit = 1 << img.scBits
	}
	end := off + n
	lo, hi := (off+unit-1)&^(unit-1), end&^(unit-1)
	if end >= img.length {
		hi = end // the last unit is whole up to the end of the image
	}
	if lo >= hi {
		lo, hi = end, end // no whole unit: all of it is a partial one
	}
	for _, r := range [][2]int64{{off, lo}, {hi, end}} {
		if r[0] >= r[1] {
			continue
		}
		zero, err := img.readsZero(r[0], r[1]-r[0])
		if err != nil {
			return err
		}
		if !zero {
			return block.ErrNotSupported
		}
	}
	if lo >= hi {
		return nil
	}
	if img.extL2 {
		// Whole subclusters of a compressed cluster are written as data.
		for _, c := range []int64{lo >> img.clusterBits, (hi - 1) >> img.clusterBits} {
			start := c << img.clusterBits
			if lo <= start && (hi >= start+img.clusterSize || hi >= img.length) {
				continue
			}
			_, e, _, _, err := img.l2Entry(c)
			if err != nil {
				return err
			}
			if e&flagCompressed != 0 {
				return block.ErrNotSupported
			}
		}
		// Checked: nothing in it is refused.
		return img.writeZeroesExt(off, n, unmap, false)
	}
	return img.writeZeroesLocked(lo, hi-lo, unmap)
}
