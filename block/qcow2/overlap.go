package qcow2

// The metadata overlap check (QEMU's qcow2_check_metadata_overlap with
// every check on). Scanning the refcount table and the L1 table on each
// write made the check the most expensive part of an in-place write, so
// the clusters they point to are kept in sorted lists, rebuilt when
// metaGen says a location changed: a check is then two binary searches.

import (
	"slices"
)

// metaIndex is where the refcount blocks and active L2 tables were when
// img.metaGen was gen: the sorted file offsets of each (cluster-sized).
type metaIndex struct {
	gen       uint64
	refblocks []int64
	l2        []int64
}

// metaChanged records that a metadata location may have changed: an L1
// or refcount table entry, a table moved, refcounts or snapshots loaded.
// Called with img.wmu held exclusively (or by a single-threaded repair).
func (img *image) metaChanged() { img.metaGen++ }

// freshIndex is the index if it is current, else nil. The shared side of
// img.wmu is enough: the index and metaGen change only under the
// exclusive side.
func (img *image) freshIndex() *metaIndex {
	if x := img.metaIdx; x != nil && x.gen == img.metaGen {
		return x
	}
	return nil
}

// index is the current index, rebuilt if stale; img.wmu held exclusively.
func (img *image) index() *metaIndex {
	if x := img.freshIndex(); x != nil {
		return x
	}
	x := &metaIndex{gen: img.metaGen}
	for _, e := range img.rc.table {
		if e != 0 {
			x.refblocks = append(x.refblocks, int64(e&reftOffsetMask))
		}
	}
	img.l1mu.RLock()
	for _, e := range img.l1 {
		if o := int64(e & offsetMask); o != 0 {
			x.l2 = append(x.l2, o)
		}
	}
	img.l1mu.RUnlock()
	slices.Sort(x.refblocks)
	slices.Sort(x.l2)
	img.metaIdx = x
	return x
}

// hits reports a cluster-sized area starting at one of starts (sorted)
// overlapping [off, off+n): the first start past off-cs is before off+n.
func hits(starts []int64, off, n, cs int64) bool {
	i, _ := slices.BinarySearch(starts, off-cs+1)
	return n > 0 && i < len(starts) && starts[i] < off+n
}

// overlap names the metadata [off, off+n) overlaps, ignoring the kinds in
// ign, or "": checked against the current index (img.wmu held
// exclusively).
func (img *image) overlap(off, n int64, ign int) string {
	return img.overlapIn(img.index(), off, n, ign)
}

// overlapIn is overlap against index x, which must be current.
func (img *image) overlapIn(x *metaIndex, off, n int64, ign int) string {
	cs := img.clusterSize
	in := func(start, size int64) bool { return size > 0 && off < start+size && start < off+n }
	if in(0, cs) {
		return "qcow2_header"
	}
	h := img.hdr
	if ign&olL1 == 0 && in(int64(h.L1TableOffset), int64(h.L1Size)*8) {
		return "active L1 table"
	}
	rc := img.rc
	if ign&olRefTable == 0 && in(rc.tableOff, rc.tableClust*cs) {
		return "refcount table"
	}
	if ign&olRefblocks == 0 && hits(x.refblocks, off, n, cs) {
		return "refcount block"
	}
	if what := img.snap.overlap(off, n, cs, ign&olInactiveL2 == 0); what != "" {
		return what
	}
	if ign&olL2 == 0 && hits(x.l2, off, n, cs) {
		return "active L2 table"
	}
	return ""
}
