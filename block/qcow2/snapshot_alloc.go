package qcow2

// allocSnapshotMeta allocates n contiguous clusters for a snapshot's L1
// table or a rewritten snapshot table where QEMU's qcow2_alloc_clusters
// puts them: the first free run from the lowest freed cluster on (the
// old table's clusters, freed, are used again), not at the end.
func (img *image) allocSnapshotMeta(n int64) (int64, error) {
	return img.rc.allocRun(n)
}
