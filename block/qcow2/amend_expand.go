package qcow2

// Zero clusters written out before a downgrade to version 2, which has
// none (QEMU's qcow2_expand_zero_clusters): the active L1 table's L2
// tables first, then every internal snapshot's. An unallocated zero
// cluster becomes unallocated without a backing file, and a fresh
// cluster of zeroes with one; an allocated zero cluster gets zeroes
// written over its host cluster and loses the zero flag. An L2 table
// that several L1 tables share is changed in place (it stays shared), so
// a fresh cluster gets as many references as the table has. The zeroes
// and refcounts are durable before any entry changes, so every crash
// state reads as before (either way the cluster reads as zeroes) and at
// worst leaks.
//
// Where minivmm differs from QEMU 7.2: an allocated zero cluster whose
// host cluster has more references than its L2 table gives it (another
// table points at the same cluster, as data a snapshot still reads) is
// not zeroed in place, which would change what that snapshot reads: the
// entry gets a fresh cluster of zeroes and drops its references to the
// old one.

import (
	"encoding/binary"
)

func isZeroEntry(e uint64) bool { return e&flagCompressed == 0 && e&flagZero != 0 }

// zeroExpander writes out zero clusters for one downgrade.
type zeroExpander struct {
	img    *image
	backed bool
	zeroes []byte
	// drops are references to give back once the entries that no
	// longer point at them are durable.
	drops []clusterDrop
}

type clusterDrop struct {
	k, n int64
}

// expandZeroClusters writes out the zero clusters of the active image and
// of its internal snapshots.
func (img *image) expandZeroClusters() error {
	// Refcounts are kept exact from here on: a version 2 header has no
	// dirty bit to stand in for them.
	img.lazy = false
	x := &zeroExpander{img: img, backed: img.hdr.BackingFileOffset != 0}
	if err := x.active(); err != nil {
		return err
	}
	if err := x.settle(); err != nil {
		return err
	}
	// Snapshot L1 tables are read from disk now that the active tables
	// are written back: a table they share with the active L1 has no
	// zero entry left.
	for _, sn := range img.snapshots {
		if err := img.checkSnapshotL1(sn); err != nil {
			return err
		}
		l1, err := img.readL1(int64(sn.L1TableOffset), sn.L1Size)
		if err != nil {
			return err
		}
		for i, l1e := range l1 {
			off := int64(l1e & offsetMask)
			if off == 0 {
				continue
			}
			if off&(img.clusterSize-1) != 0 {
				return corrupt("L2 table offset %#x unaligned (L1 index: %s)", off, chex(int64(i)))
			}
			if err := x.inactiveTable(off); err != nil {
				return err
			}
		}
	}
	return nil
}

// active expands the zero entries of the active L1 table's own L2 tables
// through the L2 cache (writeBack orders them after their clusters); a
// table it shares with snapshots is changed on disk as theirs are (the
// write path never writes a shared table), in L1 order as QEMU allocates.
func (x *zeroExpander) active() error {
	img := x.img
	cs := img.clusterSize
	for l1i := range int64(len(img.l1)) {
		img.l1mu.RLock()
		l1e := img.l1[l1i]
		img.l1mu.RUnlock()
		l2Off := int64(l1e & offsetMask)
		if l2Off == 0 {
			continue
		}
		if l2Off&(cs-1) != 0 {
			return corrupt("L2 table offset %#x unaligned (L1 index: %s)", l2Off, chex(l1i))
		}
		if l1e&flagCopied == 0 {
			if err := x.settle(); err != nil {
				return err
			}
			if err := x.inactiveTable(l2Off); err != nil {
				return err
			}
			continue
		}
		for c := l1i << img.l2Bits; c < (l1i+1)<<img.l2Bits; c++ {
			_, e, _, err := img.l2Slot(c)
			if err != nil {
				return err
			}
			ne, changed, err := x.entry(e, 1, l2Off, c&(1<<img.l2Bits-1))
			if err != nil {
				return err
			}
			if changed {
				if err := img.setL2(l2Off, c, ne); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// inactiveTable expands the zero entries of an L2 table no active L1
// entry points to, on disk: clusters and refcounts made durable, then
// the table written.
func (x *zeroExpander) inactiveTable(off int64) error {
	img := x.img
	cs := img.clusterSize
	l2rc, err := img.rc.get(off / cs)
	if err != nil {
		return err
	}
	t := make([]byte, cs)
	if err := readFile(img.file, t, off); err != nil {
		return err
	}
	changed := false
	for j := int64(0); j < cs/8; j++ {
		ne, ch, err := x.entry(binary.BigEndian.Uint64(t[8*j:]), l2rc, off, j)
		if err != nil {
			return err
		}
		if ch {
			binary.BigEndian.PutUint64(t[8*j:], ne)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := img.syncRefcounts(); err != nil {
		return err
	}
	img.file.Event("l2_update")
	if err := img.checkedWrite(t, off, olL2|olInactiveL2); err != nil {
		return err
	}
	for s := int64(0); s < cs; s += img.sliceBytes {
		img.cache.remove(off + s)
	}
	return x.settle()
}

// entry is the L2 entry e (index l2i of the table at l2Off, which l2rc
// L1 entries share) with its zero cluster written out.
func (x *zeroExpander) entry(e, l2rc uint64, l2Off, l2i int64) (uint64, bool, error) {
	if !isZeroEntry(e) {
		return e, false, nil
	}
	img := x.img
	cs := img.clusterSize
	host := int64(e & offsetMask)
	if host == 0 && !x.backed {
		return 0, true, nil
	}
	if host&(cs-1) != 0 {
		return 0, false, corrupt("Cluster allocation offset %#x unaligned (L2 offset: %#x, L2 index: %s)", host, l2Off, chex(l2i))
	}
	fresh := host == 0
	if !fresh {
		rc, err := img.rc.get(host / cs)
		if err != nil {
			return 0, false, err
		}
		if rc < l2rc {
			return 0, false, corrupt("cluster %#x has refcount %d, less than its L2 table's %d", host, rc, l2rc)
		}
		if rc > l2rc {
			// Another table points at this cluster: zeroes written over
			// it would change what that one reads.
			x.drops = append(x.drops, clusterDrop{host / cs, int64(l2rc)})
			fresh = true
		}
	}
	if fresh {
		h, err := img.rc.alloc()
		if err != nil {
			return 0, false, err
		}
		if l2rc > 1 {
			if err := img.rc.set(h/cs, l2rc); err != nil {
				img.rc.release(h/cs, 1)
				return 0, false, err
			}
		}
		host = h
	}
	if x.zeroes == nil {
		x.zeroes = make([]byte, cs)
	}
	if err := img.checkedWrite(x.zeroes, host, 0); err != nil {
		return 0, false, err
	}
	ne := uint64(host)
	if l2rc == 1 {
		ne |= flagCopied
	}
	return ne, true, nil
}

// settle writes back what the entries changed, then gives back the
// references they dropped.
func (x *zeroExpander) settle() error {
	img := x.img
	if err := img.writeBack(); err != nil {
		return err
	}
	if len(x.drops) == 0 {
		return nil
	}
	for _, d := range x.drops {
		if err := img.rc.add(d.k, -d.n); err != nil {
			return err
		}
	}
	x.drops = nil
	return img.syncRefcounts()
}
