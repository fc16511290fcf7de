package qcow2

// The size of a qcow2 image, for qemu-img measure (QEMU's
// qcow2_calc_prealloc_size and qcow2_refcount_metadata_size: the same
// arithmetic, so that the same numbers come out).

// PreallocSize is the file size of a fully allocated image of
// virtualSize bytes: the header, L1 and L2 tables, refcount structures
// and every data cluster.
func PreallocSize(virtualSize, clusterSize int64, refcountBits int, extendedL2 bool) int64 {
	total := (virtualSize + clusterSize - 1) / clusterSize * clusterSize
	l2e := int64(8)
	if extendedL2 {
		l2e = 16
	}
	meta := clusterSize // the header
	nl2e := total / clusterSize
	nl2e = roundUp(nl2e, clusterSize/l2e)
	meta += nl2e * l2e
	nl1e := nl2e * l2e / clusterSize
	nl1e = roundUp(nl1e, clusterSize/8)
	meta += nl1e * 8
	meta += RefcountMetadataSize((meta+total)/clusterSize, clusterSize, refcountBits)
	return meta + total
}

// RefcountMetadataSize is the bytes of refcount table and blocks that
// count clusters clusters and themselves: the fixed point where no
// further block or table cluster is needed.
func RefcountMetadataSize(clusters, clusterSize int64, refcountBits int) int64 {
	perTableCluster := clusterSize / 8
	perBlock := clusterSize * 8 / int64(refcountBits)
	var table, blocks, n int64
	for {
		last := n
		blocks = ceilDiv(clusters+table+blocks, perBlock)
		table = ceilDiv(blocks, perTableCluster)
		n = clusters + blocks + table
		if n == last {
			return (blocks + table) * clusterSize
		}
	}
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func roundUp(a, b int64) int64 { return ceilDiv(a, b) * b }
