package qcow2

// refblockAt is the refcount block of table index ti (which has one): an
// offset inside a cluster is corruption, found where QEMU finds it, at
// the first use of the entry, and named as QEMU names it.
func (r *refcounts) refblockAt(ti int64) ([]byte, error) {
	off := int64(r.table[ti] & reftOffsetMask)
	if off&(r.img.clusterSize-1) != 0 {
		return nil, corrupt("Refblock offset %#x unaligned (reftable index: %#x)", off, ti)
	}
	return r.block(off)
}
