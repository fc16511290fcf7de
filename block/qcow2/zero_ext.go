package qcow2

import (
	"errors"

	"minivmm/block"
)

// Zero writes with extended L2, as QEMU 7.2 does them, so that the
// bitmaps they leave are QEMU's: the range split at subcluster bounds as
// the generic layer splits it for qcow2's zero alignment, each piece
// zeroed as qcow2_co_pwrite_zeroes does, and a piece it refuses
// (ENOTSUP) written as zeroes instead.

// errZeroRefused is QEMU's -ENOTSUP from qcow2_co_pwrite_zeroes.
var errZeroRefused = block.ErrNotSupported

// writeZeroesExt zeroes guest bytes [off, off+n) of an extended L2 image
// (version 3), with img.wmu held. Without fallback a refused piece fails
// the request (BDRV_REQ_NO_FALLBACK), before anything changed in it.
func (img *image) writeZeroesExt(off, n int64, unmap, fallback bool) error {
	sc := int64(1) << img.scBits
	end := off + n
	for off < end {
		k := end - off
		if head := off & (sc - 1); head != 0 {
			k = min(k, sc-head)
		} else if tail := end & (sc - 1); tail != 0 && k > sc {
			k -= tail
		}
		err := img.zeroPiece(off, k, unmap)
		if errors.Is(err, errZeroRefused) && fallback {
			err = img.writeLocked(make([]byte, k), off)
		}
		if err != nil {
			return err
		}
		off += k
	}
	return nil
}

// zeroPiece is qcow2_co_pwrite_zeroes for one piece: a piece inside one
// subcluster is zeroed whole if the rest of it reads as zeroes and it
// holds no data, else refused; an aligned one is zeroed by
// subclusterZeroize.
func (img *image) zeroPiece(off, n int64, unmap bool) error {
	sc := int64(1) << img.scBits
	end := off + n
	head := off & (sc - 1)
	tail := (end+sc-1)&^(sc-1) - end
	if end == img.length {
		tail = 0
	}
	if head != 0 || tail != 0 {
		z, err := img.readsZero(off-head, head)
		if err == nil && z {
			z, err = img.readsZero(end, tail)
		}
		if err != nil || !z {
			return errors.Join(err, errZeroRefused)
		}
		off -= head
		n = sc
		_, e, bm, _, err := img.l2Entry(off >> img.clusterBits)
		if err != nil {
			return err
		}
		if bit := uint64(1) << uint(off&(img.clusterSize-1)>>img.scBits); e&flagCompressed != 0 || bm&bit != 0 {
			return errZeroRefused // data there: not a zero or unallocated subcluster
		}
	}
	return img.subclusterZeroize(off, n, unmap)
}

// subclusterZeroize is QEMU's qcow2_subcluster_zeroize for a range of
// whole subclusters: the partial clusters at either end get zero bits
// for their subclusters (refused in a compressed cluster, before any
// change), whole clusters read as zeroes through the bitmap, keeping
// their host cluster unless unmap (a compressed one is dropped).
func (img *image) subclusterZeroize(off, n int64, unmap bool) error {
	cs := img.clusterSize
	end := off + n
	var parts [][2]int64
	for p := off; p < end; {
		q := min(end, (p+cs)&^(cs-1))
		parts = append(parts, [2]int64{p, q})
		p = q
	}
	whole := func(p [2]int64) bool {
		return p[0]&(cs-1) == 0 && (p[1]-p[0] == cs || p[1] >= img.length)
	}
	for _, p := range parts {
		if whole(p) {
			continue
		}
		_, e, _, _, err := img.l2Entry(p[0] >> img.clusterBits)
		if err != nil {
			return err
		}
		if e&flagCompressed != 0 {
			return errZeroRefused // QEMU cannot zero part of a compressed cluster
		}
	}
	if err := img.zeroData(off, n, unmap); err != nil {
		return err
	}
	var olds []uint64
	defer func() { img.freeAll(olds) }()
	for _, p := range parts {
		c := p[0] >> img.clusterBits
		_, e, bm, _, err := img.l2Entry(c)
		if err != nil {
			return err
		}
		ne, nbm := e, bm
		if whole(p) {
			drop := e&flagCompressed != 0 || unmap && img.mapsHost(e)
			if drop {
				ne = 0
			}
			nbm = allZeroBitmap
			if ne == e && nbm == bm {
				continue
			}
			if drop {
				olds = append(olds, e)
			}
		} else {
			m := img.scMask(p[0]&(cs-1), p[1]-p[0]+p[0]&(cs-1))
			if nbm = bm&^m | m<<subclusters; nbm == bm {
				continue
			}
		}
		if err := img.setEntryOwned(c, ne, nbm); err != nil {
			return err
		}
	}
	return nil
}
