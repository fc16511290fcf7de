package qcow2

// Zero writes and discards (extended L2: write_subcluster.go).

import "minivmm/block"

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
	if img.extL2 {
		return img.writeZeroesExt(off, n, unmap, true) // zero_ext.go
	}
	cs := img.clusterSize
	if err := img.zeroData(off, n, unmap); err != nil {
		return err
	}
	var olds []uint64
	// Entries removed in memory drop their references at the next
	// write-back, even if a later cluster fails.
	defer func() { img.freeAllFor(olds, discardRequest) }()
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
		if !whole && img.hdr.Version >= 3 && e&flagCompressed == 0 && (e&flagZero != 0 || !img.mapsHost(e)) {
			// As QEMU's qcow2_co_pwrite_zeroes: a cluster with no data
			// whose rest reads as zeroes becomes a zero cluster whole.
			base := c << img.clusterBits
			z, err := img.readsZero(base, in)
			if err == nil && z {
				z, err = img.readsZero(off+k, min(base+cs, img.length)-(off+k))
			}
			if err != nil {
				return err
			}
			whole = z
		}
		switch {
		case whole && img.hdr.Version >= 3:
			// Every whole cluster gets the zero flag (QEMU's
			// zero_in_l2_slice), keeping an allocation of its own
			// unless unmap; a shared or compressed one is dropped.
			keep := !unmap && e&flagCopied != 0 && e&flagCompressed == 0 && img.mapsHost(e)
			ne := uint64(flagZero)
			if keep {
				ne = e | flagZero
			}
			if ne == e {
				break
			}
			if !keep && (img.mapsHost(e) || e&flagCompressed != 0) {
				olds = append(olds, e)
			}
			if err := img.setEntryOwned(c, ne, 0); err != nil {
				return err
			}
		case alreadyZero && (!unmap || !img.mapsHost(e)):
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

// Discard frees whole clusters, as QEMU's qcow2_cluster_discard: on
// version 3 an allocated cluster (or any, with a backing file, which must
// not show through) becomes a zero cluster, on version 2 unallocated.
// Partial clusters, and version 2 images with a backing file, keep their
// data.
func (img *image) Discard(off, n int64) error {
	return img.discard(off, n, false)
}

// MakeEmpty drops every cluster, so that the image reads as its backing
// file again: what qemu-img commit leaves of the top image. As QEMU's
// qcow2_make_empty, the metadata is rewritten whole where it can be
// (empty.go), else every cluster is discarded in full (entries made
// unallocated, not zero). The caller keeps requests away meanwhile.
func (img *image) MakeEmpty() error {
	if img.dead.Load() {
		return errDead
	}
	if err := img.begin(); err != nil {
		return err
	}
	whole := img.canEmptyWhole()
	if whole {
		err := img.emptyWhole()
		img.wmu.Unlock()
		return err
	}
	img.wmu.Unlock()
	return img.discard(0, img.length, true)
}

// discard is Discard; with full, whole clusters become unallocated.
func (img *image) discard(off, n int64, full bool) error {
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
	// write-back, even if a later cluster fails: a guest's discard is
	// passed down as a request, making the image empty (commit) as
	// QEMU's qcow2_make_empty does, as a snapshot's.
	why := discardRequest
	if full {
		why = discardSnapshot
	}
	defer func() { img.freeAllFor(olds, why) }()
	for n > 0 {
		c := off >> img.clusterBits
		in := off & (cs - 1)
		k := min(n, cs-in)
		off, n = off+k, n-k
		whole := k == cs || in == 0 && off >= img.length
		if full && whole {
			l2Off, e, bm, _, err := img.l2Entry(c)
			if err != nil {
				return err
			}
			if l2Off == 0 || e == 0 && bm == 0 {
				continue
			}
			if err := img.setEntryOwned(c, 0, 0); err != nil {
				return err
			}
			if img.mapsHost(e) || e&flagCompressed != 0 {
				olds = append(olds, e)
			}
			continue
		}
		if img.extL2 {
			if err := img.discardExt(c, in, k, &olds); err != nil {
				return err
			}
			continue
		}
		if !whole {
			continue
		}
		l2Off, e, _, err := img.l2Slot(c)
		if err != nil {
			return err
		}
		ne := uint64(0)
		switch {
		case img.backing != nil && img.hdr.Version < 3:
			continue
		case img.backing != nil:
			ne = flagZero
		case l2Off == 0 || !img.mapsHost(e) && e&flagCompressed == 0:
			continue // nothing allocated: left as it is, as in QEMU
		case img.hdr.Version >= 3:
			// QEMU's discard leaves an allocated cluster a zero one
			// (qcow2_cluster_discard without full_discard).
			ne = flagZero
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

// readsZero tells whether the guest range [off, off+n) reads as zeroes
// as far as metadata tells (QEMU's is_zero): zero or unallocated clusters
// over no backing file, or over a backing range that says it is zero.
func (img *image) readsZero(off, n int64) (bool, error) {
	for n > 0 {
		ext, err := img.extentAt(off, n)
		if err != nil {
			return false, err
		}
		switch ext.kind {
		case extZero:
		case extUnallocated:
			if img.backing != nil {
				if z, err := backingReadsZero(img.backing, off, ext.n); err != nil || !z {
					return false, err
				}
			}
		default:
			return false, nil
		}
		off, n = off+ext.n, n-ext.n
	}
	return true, nil
}

func backingReadsZero(b *block.Node, off, n int64) (bool, error) {
	if end := b.Length(); off+n > end {
		n = max(0, end-off) // past the backing file's end: zeroes
	}
	for n > 0 {
		st, k, err := block.StatusAbove(b, nil, off, n)
		if err != nil || !st.Zero {
			return false, err
		}
		off, n = off+k, n-k
	}
	return true, nil
}
