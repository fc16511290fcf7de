package qcow2

// Writing back what the write path holds in memory, in the order that
// keeps the image consistent on disk, and the flushes that order it.

import (
	"fmt"
)

// What the write path holds in memory before it writes back: L2 slices
// (at least half the L2 cache, else this many bytes of them), and
// references held back.
const (
	maxDirtyL2Bytes = 4 << 20
	maxFrees        = 4096
)

// writeBack writes the metadata changes held in memory, in rounds: the
// refcounts (unless lazy) made durable, then the L2 slices made durable,
// then the references of removed entries dropped, and these refcounts
// written too, as QEMU's flush writes both its caches. Everything
// written before is durable when it returns.
func (img *image) writeBack() error {
	flushed, err := img.dropFrees()
	if err != nil {
		return err
	}
	if !img.rc.deferred && len(img.rc.dirty) > 0 {
		return img.syncRefcounts()
	}
	if flushed {
		return nil
	}
	return img.syncFile()
}

// dropFrees writes the L2 slices changed in memory and, once they are
// durable, drops the references of the entries they removed, in rounds
// until nothing is held: the first part of writeBack, and what an
// allocation does first when references are held back (reuse.go).
// flushed: the file was flushed after the last write.
func (img *image) dropFrees() (flushed bool, err error) {
	rc := img.rc
	for len(img.l2Dirty) > 0 || len(img.frees) > 0 {
		// The refcounts, and the data written into the clusters the
		// entries will point to, are durable before the entries, also
		// when no refcount changed (subclusters allocated in a cluster
		// the image owns; lazy refcounts): else a crash leaves an entry
		// over bytes never written, losing the flushed data a
		// copy-on-write had copied next to the new. With nothing written
		// since the last flush, the file node does no fdatasync.
		if err := img.syncRefcounts(); err != nil {
			return false, err
		}
		if err := img.writeL2(); err != nil {
			return false, err
		}
		if err := img.syncFile(); err != nil {
			return false, err
		}
		rc.unsynced = false
		flushed = true
		frees := img.frees
		img.frees = nil
		endBatch := rc.batchDiscards()
		for i, f := range frees {
			if err := img.free(f.e, f.why); err != nil {
				// Kept for the next round: dropped, they would leak.
				img.frees = append(frees[i:], img.frees...)
				endBatch()
				return false, err
			}
		}
		endBatch()
	}
	return flushed, nil
}

// syncRefcounts makes everything written so far durable, and before it
// the refcounts changed in memory, unless the dirty bit stands in for
// them (lazy refcounts): what is written next may point to what they
// count.
func (img *image) syncRefcounts() error {
	if !img.rc.deferred {
		if err := img.rc.writeBack(); err != nil {
			return err
		}
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	img.rc.unsynced = false
	return nil
}

// syncFile flushes the file child. A failed flush is not forgotten: the
// kernel may have dropped the pages it could not write, and a later
// fdatasync then succeeds without them (Linux), so what that flush was to
// make durable can never be trusted to be. As QEMU's file driver does,
// every later flush fails too, and the image is never marked clean. Held
// under wmu.
func (img *image) syncFile() error {
	if img.flushErr != nil {
		return fmt.Errorf("qcow2: an earlier flush failed: %w", img.flushErr)
	}
	if err := img.syncData(); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		img.flushErr = err
		return err
	}
	return nil
}

// free drops the references of an L2 entry (or the cluster of a table)
// that nothing points to any more on disk, for why.
func (img *image) free(e uint64, why discardReason) error {
	img.file.Event("cluster_free")
	cs := img.clusterSize
	if e&flagCompressed != 0 {
		off, size := img.compressedRange(e)
		for c := off / cs; c <= (off+size-1)/cs; c++ {
			if err := img.rc.addFor(c, -1, why); err != nil {
				return err
			}
		}
		return nil
	}
	if off := int64(e & offsetMask); off != 0 {
		return img.rc.addFor(off/cs, -1, why)
	}
	return nil
}

// freeAll drops the references of entries removed in memory, once their
// removal is on disk (at the next writeBack): a copy-on-write's old
// clusters, which are not discarded in the file (QEMU's
// QCOW2_DISCARD_NEVER: the next write reuses them anyway).
func (img *image) freeAll(old []uint64) error { return img.freeAllFor(old, discardNever) }

// freeAllFor is freeAll for why (passdiscard.go).
func (img *image) freeAllFor(old []uint64, why discardReason) error {
	if img.external() {
		// Data clusters in a data file have no refcounts: the entries
		// were their last reference.
		img.discardDataFor(old, why)
		return nil
	}
	img.noteFrees(old)
	for _, e := range old {
		img.frees = append(img.frees, freed{e, why})
	}
	return nil
}
