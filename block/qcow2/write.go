package qcow2

// The write path: guest writes with copy-on-write of clusters, zero
// writes, discards, growth, dirty-image repair and overlap checks.
//
// Refcount blocks and L2 entries are changed in memory and written back
// in batches (writeBack: at Flush, at Close, when the last writer goes,
// and when too many are held), as QEMU's metadata caches do, in an order
// that keeps the image consistent on disk at every point: a cluster's
// refcount is durable before an entry pointing to it is written, and an
// entry's removal is durable before the references it held are dropped
// (until then the clusters are not reused either). The L1 table, the
// header and new tables are written through, ordered by flushes the same
// way. All writes are serialized by img.wmu; reads take no lock of it.
//
// This file holds the driver's write entry points; the rest is one
// concept per file: writable.go (readying an image for writes), cow.go
// (allocating writes), inplace.go (the shared fast path), discard.go,
// resize.go, tablewrite.go (L1/L2 on the write path), writeback.go,
// metawrite.go (overlap-checked writes), headerwrite.go (header fields,
// corrupt and dirty bits), filegrow.go.

import (
	"golang.org/x/sys/unix"
)

// begin takes the write lock and readies the image for writing.
func (img *image) begin() error {
	img.wmu.Lock()
	if img.corrupted {
		img.wmu.Unlock()
		return errVersionCorrupt
	}
	if !img.writable {
		img.wmu.Unlock()
		return unix.EPERM
	}
	if err := img.startWriting(); err != nil {
		img.wmu.Unlock()
		return err
	}
	// Bound what is held in memory: pinned slices stay in the L2 cache,
	// beyond its size if need be.
	if len(img.l2Dirty) >= max(img.cache.max/2, maxDirtyL2Bytes/img.cache.sliceBytes, 1) || len(img.frees) >= maxFrees {
		if err := img.writeBack(); err != nil {
			img.wmu.Unlock()
			return err
		}
	}
	return nil
}

// WriteAt writes guest bytes.
func (img *image) WriteAt(p []byte, off int64) (int, error) {
	if img.dead.Load() {
		return 0, errDead
	}
	if done, err := img.writeInPlace(p, off); done {
		if err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if err := img.begin(); err != nil {
		return 0, err
	}
	defer img.wmu.Unlock()
	if err := img.writeLocked(p, off); err != nil {
		img.signalCorruptionLocked(err)
		return 0, err
	}
	return len(p), nil
}

// Flush makes completed writes durable, metadata written back. With lazy
// refcounts the refcounts stay in memory, as in QEMU: the dirty bit on
// disk covers them.
func (img *image) Flush() error {
	img.file.Event("flush_to_os")
	img.wmu.Lock()
	defer img.wmu.Unlock()
	if !img.writable || img.rc == nil {
		return nil
	}
	if img.corrupted {
		return img.syncFile()
	}
	img.file.Event("flush_to_disk")
	return img.writeBack()
}

// Close flushes a written image (marked clean, if it still can be); the
// graph has usually done so already, through DropWriter.
func (img *image) Close() error { return img.DropWriter() }

// DropWriter writes back what is held in memory and marks the image clean
// while the file child can still be written: the graph takes its write
// permission away next.
func (img *image) DropWriter() error {
	img.wmu.Lock()
	defer img.wmu.Unlock()
	if img.writable && img.rc != nil && !img.corrupted {
		return img.closeWriteBack()
	}
	if img.writable && img.rc != nil {
		// Marked corrupt: nothing more is written back, but the growth
		// steps' unused tail is cut, leaving the file as long as QEMU's.
		return img.trimFile()
	}
	return nil
}
