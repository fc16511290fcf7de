package qcow2

// Reusing freed clusters, and where a write's new clusters go: as QEMU's
// allocator (qcow2-refcount.c), which keeps free_cluster_index, lowers it
// when a refcount drops to 0, and takes a run of clusters for a write
// from the first gap wide enough at or after it, or continues the host
// range the write has so far when the clusters there are free. Images
// minivmm and QEMU write then map alike, also after discards.
//
// A freed cluster is found free only once nothing on disk points to it:
// references removed from L2 entries are held back (img.frees) until the
// entries' removal is durable, and an allocation that follows them
// writes the L2 slices back and drops the references first (reclaim).
// So the data written into a reused cluster can never show through the
// old guest offset after a crash, where QEMU's cache only orders the L2
// update before the refcount one (its data write into the cluster may
// reach the disk first).

// reclaim drops the references held back, after writing back what holds
// them, when one of them may free a cluster: the next allocation then
// finds it free (refcounts.hint is lowered by the drop).
func (img *image) reclaim() error {
	if !img.rc.mayFree || len(img.frees) == 0 {
		return nil
	}
	if _, err := img.dropFrees(); err != nil {
		return err
	}
	img.rc.mayFree = false
	return nil
}

// noteFrees records whether entries held back may free a cluster: one
// whose references are all among them makes the next allocation reclaim
// first. A reference that leaves others (a cluster shared with a
// snapshot, a compressed cluster others still use) frees nothing, and
// costs the next allocation no flush.
func (img *image) noteFrees(old []uint64) {
	if img.rc.mayFree {
		return
	}
	cs := img.clusterSize
	drops := map[int64]uint64{}
	for _, e := range old {
		if e&flagCompressed != 0 {
			off, size := img.compressedRange(e)
			for c := off / cs; c <= (off+size-1)/cs; c++ {
				drops[c]++
			}
		} else if off := int64(e & offsetMask); off != 0 {
			drops[off/cs]++
		}
	}
	for k, n := range drops {
		if v, err := img.rc.get(k); err != nil || v <= n {
			img.rc.mayFree = true
			return
		}
	}
}

// allocRun takes n contiguous free clusters with refcount 1, as QEMU's
// alloc_clusters_noref (cluster 0 too, if its refcount says it is free:
// a corrupt image, which the header's overlap check or the caller
// catches as QEMU does): scanning from the hint, past every cluster in
// use, to the first n free in a row (past the end of the image, where
// all are); the hint moves past them. It returns the first one's file
// offset; the caller flushes before pointing anything at them.
func (r *refcounts) allocRun(n int64) (int64, error) {
	r.img.file.Event("cluster_alloc")
	start := r.hint
	for k := start; k < start+n && k < r.end; k++ {
		v, err := r.get(k)
		if err != nil {
			return 0, err
		}
		if v != 0 {
			start = k + 1
		}
	}
	r.hint = start + n
	return start * r.img.clusterSize, r.take(start, n)
}

// allocAt takes the free clusters in a row at file offset off, at most n
// of them, as QEMU's qcow2_alloc_clusters_at (a write continuing its host
// range): how many it took, 0 if the first is in use.
func (r *refcounts) allocAt(off, n int64) (int64, error) {
	k0 := off / r.img.clusterSize
	got := int64(0)
	for ; got < n && k0+got < r.end; got++ {
		v, err := r.get(k0 + got)
		if err != nil {
			return 0, err
		}
		if v != 0 {
			break
		}
	}
	if k0+got >= r.end {
		got = n // past the end: all free
	}
	if got == 0 {
		return 0, nil
	}
	r.img.file.Event("cluster_alloc")
	return got, r.take(k0, got)
}

// take sets the refcounts of the n free clusters from k to 1, the end
// moved past them first (so that a refcount block they need goes after
// them), and grows the file over them; on failure nothing stays taken.
func (r *refcounts) take(k, n int64) error {
	if k+n > r.end {
		r.end = k + n
	}
	for i := k; i < k+n; i++ {
		if err := r.set(i, 1); err != nil {
			r.release(k, i-k)
			r.trimEnd(k + n)
			return err
		}
	}
	if err := r.img.ensureFile((k + n) * r.img.clusterSize); err != nil {
		r.release(k, n)
		return err
	}
	return nil
}

// trimEnd brings the end back over free clusters below old (an end a
// failed take moved).
func (r *refcounts) trimEnd(old int64) {
	for r.end > 0 && r.end <= old {
		if v, err := r.get(r.end - 1); err != nil || v != 0 {
			break
		}
		r.end--
	}
}

// hostRun is the clusters taken for a write's run of allocations, handed
// out one by one to its guest clusters.
type hostRun struct {
	next, left int64 // file offset of the next one, how many are left
}

// nextHost hands out the next cluster of the run.
func (h *hostRun) nextHost(cs int64) int64 {
	off := h.next
	h.next += cs
	h.left--
	return off
}

// release gives back what a failed write did not use.
func (h *hostRun) release(img *image) {
	if h.left > 0 {
		img.rc.release(h.next/img.clusterSize, h.left)
		h.left = 0
	}
}

// newRun takes the host clusters for the run of guest clusters from c on
// that need new ones, as QEMU's handle_alloc counts them: consecutive, in
// the write (its last cluster is last), within c's L2 slice. cont is
// where the write's host range so far ends (-1: none): the run continues
// it where the clusters there are free (as many as are), else goes
// where allocRun finds room.
func (img *image) newRun(c, last, cont int64) (hostRun, error) {
	if err := img.reclaim(); err != nil {
		return hostRun{}, err
	}
	sliceEnd := (c/img.sliceEntries + 1) * img.sliceEntries
	n := int64(1)
	for k := c + 1; k <= last && k < sliceEnd; k++ {
		_, e, _, _, err := img.l2Entry(k)
		if err != nil {
			return hostRun{}, err
		}
		if !img.needsAlloc(e) {
			break
		}
		n++
	}
	if cont >= 0 {
		got, err := img.rc.allocAt(cont, n)
		if err != nil {
			return hostRun{}, err
		}
		if got > 0 {
			return hostRun{next: cont, left: got}, nil
		}
	}
	off, err := img.rc.allocRun(n)
	if err != nil {
		return hostRun{}, err
	}
	return hostRun{next: off, left: n}, nil
}

// needsAlloc: a write to a cluster with entry e takes a new host cluster
// (QEMU's cluster_needs_new_alloc): it is not one the image alone
// references, with data or preallocated as zeroes.
func (img *image) needsAlloc(e uint64) bool {
	return !img.owned(e) && !img.zeroAllocOwned(e)
}

// zeroAllocOwned: a zero cluster that keeps its own host cluster (without
// extended L2): a write goes into that cluster, as in QEMU, the rest of
// it written as zeroes, and the entry loses its zero flag.
func (img *image) zeroAllocOwned(e uint64) bool {
	return !img.extL2 && e&flagZero != 0 && e&flagCopied != 0 && e&flagCompressed == 0 && img.mapsHost(e)
}
