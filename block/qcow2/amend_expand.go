package qcow2

// Zero clusters written out before a downgrade to version 2, which has
// none (QEMU's qcow2_expand_zero_clusters), for the active L1 table: an
// unallocated zero cluster becomes unallocated without a backing file
// and a fresh cluster of zeroes with one; an allocated zero cluster gets
// zeroes written over its host cluster and loses the zero flag. The
// zeroes and refcounts are durable before any entry changes (writeBack's
// order), so every crash state reads as before: either way the cluster
// reads as zeroes. QEMU also expands internal snapshots' L2 tables;
// minivmm refuses those (errDowngradeSnapZero).

import (
	"encoding/binary"
	"errors"
)

// errDowngradeSnapZero is a zero cluster that an internal snapshot (or
// an L2 table or data cluster shared with one) holds.
var errDowngradeSnapZero = errors.New("minivmm cannot downgrade an image whose internal snapshots have zero clusters to compat=0.10 (QEMU writes them out as data)")

// snapshotsHaveZero tells whether an L2 table of the snapshots' L1
// tables holds a zero cluster.
func (img *image) snapshotsHaveZero() (bool, error) {
	t := make([]byte, img.clusterSize)
	for _, sn := range img.snapshots {
		l1, err := img.readL1(int64(sn.L1TableOffset), sn.L1Size)
		if err != nil {
			return false, err
		}
		for _, l1e := range l1 {
			off := int64(l1e & offsetMask)
			if off == 0 {
				continue
			}
			if err := readFile(img.file, t, off); err != nil {
				return false, err
			}
			for j := 0; j < len(t); j += 8 {
				if e := binary.BigEndian.Uint64(t[j:]); isZeroEntry(e) {
					return true, nil
				}
			}
		}
	}
	return false, nil
}

func isZeroEntry(e uint64) bool { return e&flagCompressed == 0 && e&flagZero != 0 }

// expandZeroClusters writes out the active image's zero clusters.
func (img *image) expandZeroClusters() error {
	if has, err := img.snapshotsHaveZero(); err != nil {
		return err
	} else if has {
		return errDowngradeSnapZero
	}
	// Refcounts are kept exact from here on: a version 2 header has no
	// dirty bit to stand in for them.
	img.lazy = false
	backed := img.hdr.BackingFileOffset != 0
	cs := img.clusterSize
	var zeroes []byte
	for l1i := range int64(len(img.l1)) {
		img.l1mu.RLock()
		l1e := img.l1[l1i]
		img.l1mu.RUnlock()
		if l1e&offsetMask == 0 {
			continue
		}
		for c := l1i << img.l2Bits; c < (l1i+1)<<img.l2Bits; c++ {
			l2Off, e, copied, err := img.l2Slot(c)
			if err != nil {
				return err
			}
			if !isZeroEntry(e) {
				continue
			}
			host := int64(e & offsetMask)
			switch {
			case !copied || (host != 0 && e&flagCopied == 0):
				// Shared with a snapshot: its L2 table or data cluster
				// would change under it.
				return errDowngradeSnapZero
			case host == 0 && !backed:
				if err := img.setL2(l2Off, c, 0); err != nil {
					return err
				}
				continue
			case host == 0:
				if host, err = img.rc.alloc(); err != nil {
					return err
				}
			}
			if zeroes == nil {
				zeroes = make([]byte, cs)
			}
			if err := img.checkedWrite(zeroes, host, 0); err != nil {
				return err
			}
			if err := img.setL2(l2Off, c, uint64(host)|flagCopied); err != nil {
				return err
			}
		}
	}
	return img.writeBack()
}
