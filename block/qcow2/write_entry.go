package qcow2

// writeEntry is l2Entry for the write path, which refuses an extended L2
// entry whose bitmap is invalid (a subcluster both allocated and zero,
// or allocated in a cluster with no host cluster) as QEMU's write path
// does, in its words.
func (img *image) writeEntry(c int64) (l2Off int64, e, bm uint64, copied bool, err error) {
	l2Off, e, bm, copied, err = img.l2Entry(c)
	if err != nil || !img.extL2 || e&flagCompressed != 0 {
		return l2Off, e, bm, copied, err
	}
	if alloc := bm & allocBitmapMask; !img.mapsHost(e) && alloc != 0 || alloc&(bm>>subclusters) != 0 {
		return 0, 0, 0, false, corrupt("Invalid cluster entry found (L2 offset: %#x, L2 index: %s)", l2Off, chex(c&(1<<img.l2Bits-1)))
	}
	return l2Off, e, bm, copied, nil
}
