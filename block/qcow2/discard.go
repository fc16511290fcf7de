package qcow2

import "minivmm/block"

// Zero writes and discards (extended L2: write_subcluster.go).

// WriteZeroes: on version 3 whole clusters get the zero flag (keeping
// their allocation unless unmap); on version 2 without a backing file
// they are deallocated with unmap; anything else is written as zeroes.
func (img *image) WriteZeroes(off, n int64, unmap bool) error {
	if img.dead.Load() {
		return errDead
	}
	if err := img.begin(); err != nil {
		return err
	}
	defer img.wmu.Unlock()
	err := img.writeZeroesLocked(off, n, unmap)
	img.signalCorruptionLocked(err)
	return err
}

// writeZeroesLocked is WriteZeroes with img.wmu held and the image ready
// for writes.
func (img *image) writeZeroesLocked(off, n int64, unmap bool) error {
	cs := img.clusterSize
	var olds []uint64
	// Entries removed in memory drop their references at the next
	// write-back, even if a later cluster fails.
	defer func() { img.freeAll(olds) }()
	for n > 0 {
		c := off >> img.clusterBits
		in := off & (cs - 1)
		k := min(n, cs-in)
		if img.extL2 {
			if err := img.zeroesExt(c, in, k, unmap, &olds); err != nil {
				return err
			}
			off, n = off+k, n-k
			continue
		}
		l2Off, e, _, err := img.l2Slot(c)
		if err != nil {
			return err
		}
		alreadyZero := e&flagCompressed == 0 && (e&flagZero != 0 || e&offsetMask == 0 && img.backing == nil)
		whole := k == cs || in == 0 && off+k >= img.length
		if img.hdr.Version >= 3 && e&flagZero == 0 {
			// Version 3 marks the cluster zero even where it reads
			// zeroes already, as QEMU does: a backing file set later
			// must not show through. A partial cluster gets the mark
			// too when it is unallocated and the rest of it reads as
			// zeroes (qcow2_co_pwrite_zeroes).
			alreadyZero = false
			if !whole && e&(offsetMask|flagCompressed) == 0 {
				rz, err := img.restReadsZero(c<<img.clusterBits, in, k)
				if err != nil {
					return err
				}
				whole = rz
			}
		}
		switch {
		case alreadyZero && (!unmap || e&offsetMask == 0):
		case whole && img.hdr.Version >= 3:
			ne := uint64(flagZero)
			if !unmap && e&flagCopied != 0 && e&flagCompressed == 0 && e&offsetMask != 0 {
				ne = e | flagZero
			} else if e != 0 {
				olds = append(olds, e)
			}
			if err := img.setEntryOwned(c, ne, 0); err != nil {
				return err
			}
		case whole && unmap && img.backing == nil && l2Off != 0:
			if e != 0 {
				if err := img.setEntryOwned(c, 0, 0); err != nil {
					return err
				}
				olds = append(olds, e)
			}
		default:
			if err := img.writeLocked(make([]byte, k), off); err != nil {
				return err
			}
		}
		off, n = off+k, n-k
	}
	return nil
}

// restReadsZero reports that, in the unallocated cluster at guest offset
// start, what lies around bytes [in, in+k) reads as zeroes by the status
// of the backing chain (nothing below reads as zeroes).
func (img *image) restReadsZero(start, in, k int64) (bool, error) {
	if img.backing == nil {
		return true, nil
	}
	end := min(start+img.clusterSize, img.length)
	for _, r := range [][2]int64{{start, start + in}, {start + in + k, end}} {
		for off := r[0]; off < r[1]; {
			if off >= img.backing.Length() {
				break
			}
			st, n, err := block.StatusAbove(img.backing, nil, off, min(r[1], img.backing.Length())-off)
			if err != nil {
				return false, err
			}
			if !st.Zero {
				return false, nil
			}
			off += n
		}
	}
	return true, nil
}

// Discard frees whole clusters: unallocated, or with a backing file
// (version 3) zero, so that the backing file does not show through.
// Partial clusters, and version 2 images with a backing file, keep their
// data.
func (img *image) Discard(off, n int64) error {
	if img.dead.Load() {
		return errDead
	}
	if err := img.begin(); err != nil {
		return err
	}
	defer img.wmu.Unlock()
	cs := img.clusterSize
	var olds []uint64
	// Entries removed in memory drop their references at the next
	// write-back, even if a later cluster fails.
	defer func() { img.freeAll(olds) }()
	for n > 0 {
		c := off >> img.clusterBits
		in := off & (cs - 1)
		k := min(n, cs-in)
		off, n = off+k, n-k
		if img.extL2 {
			if err := img.discardExt(c, in, k, &olds); err != nil {
				return err
			}
			continue
		}
		if !(k == cs || in == 0 && off >= img.length) {
			continue
		}
		l2Off, e, _, err := img.l2Slot(c)
		if err != nil {
			return err
		}
		ne := uint64(0)
		if img.backing != nil {
			if img.hdr.Version < 3 {
				continue
			}
			ne = flagZero
		} else if l2Off == 0 {
			continue
		}
		if e == ne {
			continue
		}
		if err := img.setEntryOwned(c, ne, 0); err != nil {
			return err
		}
		if e&offsetMask != 0 || e&flagCompressed != 0 {
			olds = append(olds, e)
		}
	}
	return nil
}
