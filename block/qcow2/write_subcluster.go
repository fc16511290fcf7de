package qcow2

// Extended L2 (subclusters): the bitmap arithmetic of the write path, and
// zero writes and discards at subcluster granularity. A subcluster is
// allocated (low 32 bits), reads as zeroes (high 32 bits) or shows what
// is below (neither); never both.

// allZeroBitmap: every subcluster reads as zeroes, none allocated.
const allZeroBitmap = uint64(allocBitmapMask) << subclusters

// scMask is the subclusters [lo, hi) touches (cluster-relative bytes,
// lo < hi).
func (img *image) scMask(lo, hi int64) uint64 {
	first, last := uint(lo>>img.scBits), uint((hi-1)>>img.scBits)
	return (1<<(last+1) - 1) &^ (1<<first - 1)
}

// scRound widens [lo, hi) to whole subclusters.
func (img *image) scRound(lo, hi int64) (int64, int64) {
	scs := int64(1) << img.scBits
	return lo &^ (scs - 1), (hi + scs - 1) &^ (scs - 1)
}

// scWhole is the subclusters wholly inside [lo, hi) of the cluster at
// guest offset start, a subcluster reaching past the end of the image
// counting as whole when the range goes to the end, and that inner range
// (lo >= hi if there is none).
func (img *image) scWhole(start, lo, hi int64) (mask uint64, wlo, whi int64) {
	scs := int64(1) << img.scBits
	wlo, whi = (lo+scs-1)&^(scs-1), hi&^(scs-1)
	if start+hi >= img.length {
		whi = (hi + scs - 1) &^ (scs - 1)
	}
	if wlo >= whi {
		return 0, wlo, whi
	}
	return img.scMask(wlo, whi), wlo, whi
}

// readZero reports that the subclusters in mask of an entry (e, bm) read
// as zeroes without a write: zero subclusters, or unallocated ones with
// nothing below.
func (img *image) readZero(e, bm, mask uint64) bool {
	if e&flagCompressed != 0 {
		return false
	}
	zero := bm >> subclusters
	if img.backing == nil {
		zero |= ^bm & allocBitmapMask
	}
	return zero&mask == mask
}

// zeroesExt is WriteZeroes for bytes [in, in+k) of guest cluster c with
// extended L2: a whole cluster reads as zeroes through its bitmap
// (keeping its host cluster unless unmap, or it is not the image's
// alone); whole subclusters get the zero bit; partial ones are written.
// Old entries whose reference must be dropped are added to olds.
func (img *image) zeroesExt(c, in, k int64, unmap bool, olds *[]uint64) error {
	cs := img.clusterSize
	start := c * cs
	_, e, bm, _, err := img.l2Entry(c)
	if err != nil {
		return err
	}
	if e == 0 && img.backing == nil {
		return nil // unallocated, nothing below: reads as zeroes already
	}
	if k == cs || in == 0 && start+k >= img.length {
		keep := !unmap && img.owned(e)
		ne := uint64(0)
		if keep {
			ne = e
		}
		if ne == e && bm == allZeroBitmap {
			return nil
		}
		if err := img.setEntryOwned(c, ne, allZeroBitmap); err != nil {
			return err
		}
		if !keep && (img.mapsHost(e) || e&flagCompressed != 0) {
			*olds = append(*olds, e)
		}
		return nil
	}
	if e&flagCompressed != 0 {
		return img.writeLocked(make([]byte, k), start+in)
	}
	zm, wlo, whi := img.scWhole(start, in, in+k)
	if nbm := bm&^zm | zm<<subclusters; zm != 0 && nbm != bm {
		if err := img.setEntryOwned(c, e, nbm); err != nil {
			return err
		}
		bm = nbm
	}
	edges := [][2]int64{{in, min(wlo, in+k)}, {max(whi, in), in + k}}
	if zm == 0 {
		edges = [][2]int64{{in, in + k}}
	}
	for _, r := range edges {
		if r[0] >= r[1] || img.readZero(e, bm, img.scMask(r[0], r[1])) {
			continue
		}
		if err := img.writeLocked(make([]byte, r[1]-r[0]), start+r[0]); err != nil {
			return err
		}
	}
	return nil
}

// discardExt is Discard for bytes [in, in+k) of guest cluster c with
// extended L2: a whole cluster is dropped (reading as zeroes through the
// bitmap if a backing file would show through); whole subclusters are
// deallocated the same way. Compressed clusters keep partial data.
func (img *image) discardExt(c, in, k int64, olds *[]uint64) error {
	cs := img.clusterSize
	start := c * cs
	l2Off, e, bm, _, err := img.l2Entry(c)
	if err != nil || l2Off == 0 && img.backing == nil {
		return err
	}
	below := uint64(0) // the bitmap of what reads as zeroes
	if k == cs || in == 0 && start+k >= img.length {
		// As QEMU's discard_in_l2_slice: a cluster that held something
		// (or over a backing file) reads as zeroes after; an unallocated
		// one with nothing below is left as it is.
		if img.backing == nil && !img.mapsHost(e) && e&flagCompressed == 0 {
			return nil
		}
		below = allZeroBitmap
		if e == 0 && bm == below {
			return nil
		}
		if err := img.setEntryOwned(c, 0, below); err != nil {
			return err
		}
		if img.mapsHost(e) || e&flagCompressed != 0 {
			*olds = append(*olds, e)
		}
		return nil
	}
	if e&flagCompressed != 0 {
		return nil
	}
	zm, _, _ := img.scWhole(start, in, in+k)
	nbm := bm &^ zm
	if img.backing != nil {
		nbm |= zm << subclusters
	}
	if zm == 0 || nbm == bm {
		return nil
	}
	return img.setEntryOwned(c, e, nbm)
}

// setEntryOwned sets the L2 entry of guest cluster c in the image's own
// L2 table (allocated, or copied from a shared one, first).
func (img *image) setEntryOwned(c int64, e, bm uint64) error {
	l2Off, err := img.ensureL2(c >> img.l2Bits)
	if err != nil {
		return err
	}
	return img.setL2Entry(l2Off, c, e, bm)
}
