package qcow2

// Zeroing a new cluster's copy-on-write regions without writing them,
// as QEMU's handle_alloc_space: when what the guest sees around a
// write's data in a cluster it allocates (or writes into, a preallocated
// zero cluster) reads as zeroes by the image's own metadata (zero or
// unallocated clusters, no backing file), the host range is zeroed by
// the file (fallocate, no fallback to writing zeroes) and only the data
// is written: less written, and the file keeps the holes QEMU's keeps.

import (
	"errors"

	"minivmm/block"
)

// zeroCowSpace zeroes the host bytes [a.lo, a.hi) of pending a if what
// the guest sees around a's data there reads as zeroes and the data
// file can zero them fast. It reports whether it did (false: the caller
// writes the regions as data).
func (img *image) zeroCowSpace(a pending) (bool, error) {
	cs := img.clusterSize
	base := a.c * cs
	dataEnd := a.in + int64(len(a.p))
	if base+a.hi > img.length { // the tail past the disk's end (or VM state)
		return false, nil
	}
	for _, r := range [][2]int64{{a.lo, a.in}, {dataEnd, a.hi}} {
		if z, err := img.zeroByMetadata(base+r[0], r[1]-r[0]); err != nil || !z {
			return false, err
		}
	}
	off, n := a.host+a.lo, a.hi-a.lo
	// Inside the file, and clear of metadata (else the write of the
	// regions as data reports the overlap).
	if off+n > img.data.Length() || !img.external() && img.overlap(off, n, 0) != "" {
		return false, nil
	}
	img.file.Event("cluster_alloc_space")
	if img.beforeWrite != nil {
		img.beforeWrite()
	}
	err := img.data.WriteZeroesFast(off, n, false)
	if errors.Is(err, block.ErrNotSupported) {
		return false, nil
	}
	return err == nil, err
}

// zeroByMetadata tells whether the guest range [off, off+n) reads as
// zeroes by this image's metadata alone: zero clusters, or unallocated
// ones without a backing file. A backing file is not asked (QEMU's is_zero
// asks the chain): its block status takes the graph's lock, which a
// drain holds while it waits for this write.
func (img *image) zeroByMetadata(off, n int64) (bool, error) {
	for n > 0 {
		ext, err := img.extentAt(off, n)
		if err != nil {
			return false, err
		}
		if ext.kind != extZero && (ext.kind != extUnallocated || img.backing != nil) {
			return false, nil
		}
		off, n = off+ext.n, n-ext.n
	}
	return true, nil
}
