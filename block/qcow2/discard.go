package qcow2

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
	if err := img.zeroData(off, n, unmap); err != nil {
		return err
	}
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
		alreadyZero := e&flagCompressed == 0 && (e&flagZero != 0 || !img.mapsHost(e) && img.backing == nil)
		whole := k == cs || in == 0 && off+k >= img.length
		switch {
		case alreadyZero && (!unmap || !img.mapsHost(e)):
		case whole && img.hdr.Version >= 3:
			ne := uint64(flagZero)
			if !unmap && e&flagCopied != 0 && e&flagCompressed == 0 && img.mapsHost(e) {
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
	if err := img.discardData(off, n); err != nil {
		return err
	}
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
		if img.mapsHost(e) || e&flagCompressed != 0 {
			olds = append(olds, e)
		}
	}
	return nil
}
