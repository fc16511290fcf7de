package qcow2

// Where snapshot metadata goes: the first run of free clusters, as QEMU's
// qcow2_alloc_clusters finds it (from its lowest free cluster on), so
// that a snapshot's L1 table and a rewritten snapshot table land where
// QEMU puts them (the old table's clusters, freed, are used again)
// rather than at the end of the image.

// allocSnapshotMeta allocates n contiguous clusters, the first free run
// at or after the refcounts' search start, else at the end.
func (img *image) allocSnapshotMeta(n int64) (int64, error) {
	r := img.rc
	run := int64(0)
	for k := r.hint; k < r.end; k++ {
		v, err := r.get(k)
		if err != nil {
			return 0, err
		}
		if v != 0 || img.isFixedMeta(k) {
			run = 0
			continue
		}
		if run++; run < n {
			continue
		}
		start := k - n + 1
		r.img.file.Event("cluster_alloc")
		for i := start; i <= k; i++ {
			if err := r.set(i, 1); err != nil {
				r.release(start, i-start)
				return 0, err
			}
		}
		return start * img.clusterSize, nil
	}
	return r.allocContiguous(n)
}
