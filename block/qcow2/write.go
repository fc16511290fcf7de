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

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/bits"
	"slices"

	"golang.org/x/sys/unix"

	"minivmm/block"
)

// Kinds of metadata a write may be allowed to overlap (QEMU's overlap
// check "ign" mask).
const (
	olL1 = 1 << iota
	olL2
	olRefTable
	olRefblocks
)

var (
	errCorruptWrite   = errors.New("qcow2: Image is corrupt; cannot be opened read/write")
	errV2SnapResize   = notSupported("Can't resize a v2 image which has snapshots")
	errVersionCorrupt = corrupt("image marked corrupt: writes refused")
)

// checkWritable refuses what this driver cannot write.
func (img *image) checkWritable() error {
	h := img.hdr
	switch {
	case h.IncompatibleFeatures&incompatCorrupt != 0:
		return errCorruptWrite
	case h.IncompatibleFeatures&incompatDataFile != 0 || h.AutoclearFeatures&autoclearDataFileRaw != 0:
		return errors.New("minivmm cannot write qcow2 images with an external data file yet")
	case h.CryptMethod != cryptNone:
		return errors.New("minivmm cannot write encrypted qcow2 images")
	}
	return nil
}

// startWriting prepares the image for writes, once, with img.wmu held:
// refcounts loaded, a dirty image repaired, unknown autoclear bits
// cleared.
func (img *image) startWriting() error {
	if img.rc != nil {
		return nil
	}
	if err := img.checkWritable(); err != nil {
		return err
	}
	rc, err := newRefcounts(img)
	if err != nil {
		return err
	}
	if img.snap, err = img.loadSnapMeta(); err != nil {
		return err
	}
	img.l1mu.Lock()
	if n := int(img.hdr.L1Size); len(img.l1) < n {
		l1 := make([]uint64, n)
		copy(l1, img.l1)
		img.l1 = l1
	}
	img.l1mu.Unlock()
	img.rc = rc
	img.metaChanged()
	if img.hdr.IncompatibleFeatures&incompatDirty != 0 {
		if err := img.repair(); err != nil {
			img.rc = nil
			return fmt.Errorf("qcow2: could not repair the refcounts of a dirty image: %w", err)
		}
	}
	if img.hdr.Version >= 3 && img.hdr.AutoclearFeatures != 0 {
		// minivmm maintains no autoclear feature (bitmaps would go
		// stale): clear them all, as a writer that does not know them.
		var b [8]byte
		if err := img.patchHeader(88, b[:]); err != nil {
			img.rc = nil
			return err
		}
		if err := img.syncFile(); err != nil {
			img.rc = nil
			return err
		}
		img.hdr.AutoclearFeatures = 0
	}
	return nil
}

// repair rebuilds the refcounts of a dirty image from the references
// (check.go's walk), then clears the dirty bit.
func (img *image) repair() error {
	h := img.hdr
	c := &checker{
		file: img.file, hdr: h, log: io.Discard, res: &CheckResult{},
		g:             newGeometry(h, int(h.clusterSize())),
		refblockBits:  h.ClusterBits + 3 - h.RefcountOrder,
		refblockCache: map[int64][]byte{},
		refMax:        img.rc.max,
	}
	cs := h.clusterSize()
	nb := (img.file.Length() + cs - 1) / cs
	if nb > math.MaxInt32 {
		return errors.New("File too large")
	}
	c.refs = make([]uint64, nb)
	c.limit = nb + maxCheckGrowth
	c.reftable = img.rc.table
	if err := c.calculate(h, img.ext, img.snapshots); err != nil {
		return err
	}
	if c.res.Corruptions > 0 || c.res.CheckErrors > 0 {
		return errors.New("the image has corruptions beyond stale refcounts")
	}
	rc := img.rc
	rc.end = max(rc.end, int64(len(c.refs)))
	for k, want := range c.refs {
		have, err := rc.get(int64(k))
		if err != nil {
			return err
		}
		if have != want {
			if err := rc.set(int64(k), want); err != nil {
				return err
			}
		}
	}
	if err := img.syncRefcounts(); err != nil {
		return err
	}
	rc.hint = 0
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], h.IncompatibleFeatures&^incompatDirty)
	if err := img.patchHeader(72, b[:]); err != nil {
		return err
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	h.IncompatibleFeatures &^= incompatDirty
	return nil
}

// patchHeader rewrites bytes of the header in place (the sector holding
// them), leaving everything else of cluster 0 (extensions, unknown ones
// included) as it is.
func (img *image) patchHeader(off int64, b []byte) error {
	if beforeWrite != nil {
		beforeWrite()
	}
	sec := make([]byte, 512)
	if err := readFile(img.file, sec, 0); err != nil {
		return err
	}
	copy(sec[off:], b)
	_, err := img.file.WriteAt(sec, 0)
	return err
}

// fileGrowStep is how far the file grows at a time: the block layer
// refuses writes past a node's end, so allocations beyond it need a
// truncate first, and one per allocated cluster cost a syscall and the
// file node's exclusive lock on every first write. The unused tail is
// cut again by trimFile.
const fileGrowStep = 1 << 20

// ensureFile grows the file to at least size bytes.
func (img *image) ensureFile(size int64) error {
	have := img.file.Length()
	if have >= size {
		return nil
	}
	if !img.grown {
		img.grown, img.lenBeforeGrowth = true, have
	}
	step := max(img.clusterSize, fileGrowStep)
	return img.file.Truncate((size + step - 1) / step * step)
}

// trimFile cuts the file after the last allocated cluster, but never
// below its length before this image grew it: only the growth steps'
// unused tail goes (clusters past rc.end have no refcount and nothing
// points to them, so a crash before this merely leaves a sparse tail).
func (img *image) trimFile() error {
	if !img.grown {
		return nil
	}
	end := max(img.lenBeforeGrowth, img.rc.end*img.clusterSize)
	if img.file.Length() <= end {
		return nil
	}
	return img.file.Truncate(end)
}

// markCorrupt sets the corrupt bit (version 3), refuses further writes and
// says so on the monitor.
func (img *image) markCorrupt(msg string, offset, size int64) {
	img.corrupted = true
	img.reportCorruption(msg, offset, size, true)
	if img.hdr.Version >= 3 {
		var b [8]byte
		img.hdr.IncompatibleFeatures |= incompatCorrupt
		binary.BigEndian.PutUint64(b[:], img.hdr.IncompatibleFeatures)
		if img.patchHeader(72, b[:]) == nil {
			img.syncFile()
		}
	}
}

// beforeWrite, if set (by tests), runs before every write of the
// exclusive write path: the file then is what a crash there leaves.
var beforeWrite func()

// checkedWrite writes file bytes after the overlap check.
func (img *image) checkedWrite(p []byte, off int64, ign int) error {
	if img.corrupted {
		return errVersionCorrupt
	}
	if beforeWrite != nil {
		beforeWrite()
	}
	if what := img.overlap(off, int64(len(p)), ign); what != "" {
		msg := fmt.Sprintf("Preventing invalid write on metadata (overlaps with %s)", what)
		img.markCorrupt(msg, off, int64(len(p)))
		return corrupt("%s; image marked as corrupt", msg)
	}
	// A cluster may be allocated past the end of the file: QEMU allocates
	// only the subclusters a write touches, so its file can end inside
	// the last data cluster. Writing there is legal; the file node only
	// takes writes inside its length.
	if err := img.ensureFile(off + int64(len(p))); err != nil {
		return err
	}
	_, err := img.file.WriteAt(p, off)
	return err
}

func (img *image) writeMeta(p []byte, off int64, ign int) error { return img.checkedWrite(p, off, ign) }

// l2Slot finds the L2 entry of guest cluster c: the L2 table's offset (0
// if none), the entry, and whether the L1 entry has COPIED.
func (img *image) l2Slot(c int64) (l2Off int64, e uint64, copied bool, err error) {
	l2Off, e, _, copied, err = img.l2Entry(c)
	return l2Off, e, copied, err
}

// l2Entry is l2Slot with the subcluster bitmap (0 without extended L2).
func (img *image) l2Entry(c int64) (l2Off int64, e, bm uint64, copied bool, err error) {
	l1i := c >> img.l2Bits
	img.l1mu.RLock()
	var l1e uint64
	if l1i < int64(len(img.l1)) {
		l1e = img.l1[l1i]
	}
	img.l1mu.RUnlock()
	l2Off = int64(l1e & offsetMask)
	if l2Off == 0 {
		return 0, 0, 0, false, nil
	}
	if l1e&l1Reserved != 0 || l2Off&(img.clusterSize-1) != 0 {
		return 0, 0, 0, false, corrupt("L1 entry %#x at index %#x is invalid", l1e, l1i)
	}
	l2i := c & (1<<img.l2Bits - 1)
	slice := l2i / img.sliceEntries
	t, err := img.cache.get(l2Off + slice*img.sliceBytes)
	if err != nil {
		return 0, 0, 0, false, err
	}
	o := (l2i % img.sliceEntries) * int64(img.entryWords) * 8
	e = binary.BigEndian.Uint64(t[o:])
	if img.extL2 {
		bm = binary.BigEndian.Uint64(t[o+8:])
	}
	return l2Off, e, bm, l1e&flagCopied != 0, nil
}

// ensureL2 returns the L2 table of L1 index l1i, allocating one if the
// L1 entry is empty: refcount, table (zeroes) and flush, then the L1
// entry with COPIED.
func (img *image) ensureL2(l1i int64) (int64, error) {
	if l1i >= int64(len(img.l1)) {
		return 0, corrupt("L1 index %#x past the L1 table", l1i)
	}
	img.l1mu.RLock()
	l1e := img.l1[l1i]
	img.l1mu.RUnlock()
	cs := img.clusterSize
	if off := int64(l1e & offsetMask); off != 0 {
		if l1e&flagCopied != 0 {
			return off, nil
		}
		v, err := img.rc.get(off / cs)
		switch {
		case err != nil:
			return 0, err
		case v == 0:
			return 0, corrupt("L2 table at %#x (L1 index %#x) has refcount 0", off, l1i)
		case v > 1:
			return img.copyL2(l1i, off)
		}
		return off, img.setL1(l1i, uint64(off)|flagCopied)
	}
	off, err := img.rc.alloc()
	if err != nil {
		return 0, err
	}
	zero := make([]byte, cs)
	if err := img.checkedWrite(zero, off, 0); err != nil {
		img.rc.release(off/cs, 1)
		return 0, err
	}
	if err := img.syncRefcounts(); err != nil {
		img.rc.release(off/cs, 1)
		return 0, err
	}
	for s := int64(0); s < cs; s += img.sliceBytes {
		img.cache.put(off+s, make([]byte, img.sliceBytes), false)
	}
	if err := img.setL1(l1i, uint64(off)|flagCopied); err != nil {
		img.rc.release(off/cs, 1)
		return 0, err
	}
	return off, nil
}

// setL1 writes L1 entry i (the sector holding it) and updates memory.
func (img *image) setL1(i int64, e uint64) error {
	img.l1mu.Lock()
	old := img.l1[i]
	img.l1[i] = e
	img.metaChanged()
	sec := (i * 8) &^ 511
	buf := make([]byte, 512)
	for j := sec / 8; j < min(int64(len(img.l1)), sec/8+64); j++ {
		binary.BigEndian.PutUint64(buf[8*(j-sec/8):], img.l1[j])
	}
	img.l1mu.Unlock()
	l1Bytes := (int64(len(img.l1))*8 + 511) &^ 511
	buf = buf[:min(512, l1Bytes-sec)]
	if err := img.checkedWrite(buf, int64(img.hdr.L1TableOffset)+sec, olL1); err != nil {
		img.l1mu.Lock()
		img.l1[i] = old
		img.l1mu.Unlock()
		img.metaChanged()
		return err
	}
	return nil
}

// setL2 writes the L2 entry of guest cluster c in table l2Off; with
// extended L2 its bitmap becomes 0 (what a compressed cluster needs).
func (img *image) setL2(l2Off, c int64, e uint64) error { return img.setL2Entry(l2Off, c, e, 0) }

// setL2Entry sets the L2 entry (and, with extended L2, the bitmap) of
// guest cluster c in table l2Off: the updated slice is published to the
// cache, pinned there until writeBack writes it.
func (img *image) setL2Entry(l2Off, c int64, e, bm uint64) error {
	l2i := c & (1<<img.l2Bits - 1)
	sliceOff := l2Off + l2i/img.sliceEntries*img.sliceBytes
	t, err := img.cache.get(sliceOff)
	if err != nil {
		return err
	}
	o := (l2i % img.sliceEntries) * int64(img.entryWords) * 8
	if img.l2Dirty[sliceOff] && !img.extL2 {
		// The pinned copy made at this round's first change is the write
		// path's own: changed in place (requests read it atomically),
		// rather than copying the whole slice for every entry. Extended
		// L2 entries are two words that must change together, so they
		// keep copying.
		storeEntry(t, int(o), e)
		return nil
	}
	nt := append([]byte(nil), t...)
	binary.BigEndian.PutUint64(nt[o:], e)
	if img.extL2 {
		binary.BigEndian.PutUint64(nt[o+8:], bm)
	}
	img.cache.put(sliceOff, nt, true)
	img.l2Dirty[sliceOff] = true
	return nil
}

// writeL2 writes the L2 slices changed in memory.
func (img *image) writeL2() error {
	for _, off := range slices.Sorted(maps.Keys(img.l2Dirty)) {
		t, err := img.cache.get(off)
		if err != nil {
			return err
		}
		if err := img.checkedWrite(t, off, olL2); err != nil {
			return fmt.Errorf("qcow2: could not write the L2 table slice at %#x: %w", off, err)
		}
		img.cache.unpin(off)
		delete(img.l2Dirty, off)
	}
	return nil
}

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
	rc := img.rc
	flushed := false
	for len(img.l2Dirty) > 0 || len(img.frees) > 0 {
		if !rc.deferred && (len(rc.dirty) > 0 || rc.unsynced) {
			if err := img.syncRefcounts(); err != nil {
				return err
			}
		}
		if err := img.writeL2(); err != nil {
			return err
		}
		if err := img.syncFile(); err != nil {
			return err
		}
		rc.unsynced = false
		flushed = true
		frees := img.frees
		img.frees = nil
		for i, e := range frees {
			if err := img.free(e); err != nil {
				// Kept for the next round: dropped, they would leak.
				img.frees = append(frees[i:], img.frees...)
				return err
			}
		}
	}
	if !rc.deferred && len(rc.dirty) > 0 {
		return img.syncRefcounts()
	}
	if flushed {
		return nil
	}
	return img.syncFile()
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
	if err := img.file.Flush(); err != nil {
		img.flushErr = err
		return err
	}
	return nil
}

// free drops the references of an L2 entry (or the cluster of a table)
// that nothing points to any more on disk.
func (img *image) free(e uint64) error {
	cs := img.clusterSize
	if e&flagCompressed != 0 {
		off, size := img.compressedRange(e)
		for c := off / cs; c <= (off+size-1)/cs; c++ {
			if err := img.rc.add(c, -1); err != nil {
				return err
			}
		}
		return nil
	}
	if off := int64(e & offsetMask); off != 0 {
		return img.rc.add(off/cs, -1)
	}
	return nil
}

// freeAll drops the references of entries removed in memory, once their
// removal is on disk (at the next writeBack).
func (img *image) freeAll(old []uint64) error {
	img.frees = append(img.frees, old...)
	return nil
}

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
		return 0, err
	}
	return len(p), nil
}

// inPlaceSpan is one cluster's part of an in-place write.
type inPlaceSpan struct {
	host int64
	p    []byte
}

// writeInPlace is the fast path: a write all of whose clusters the image
// already owns (normal, COPIED) changes no metadata, so it needs only the
// shared side of wmu, and such writes run side by side. Every cluster is
// checked before anything is written; if one does not qualify (or the
// image is not ready for writes yet), nothing is written and done is
// false: the exclusive path then does it all and reports any error.
func (img *image) writeInPlace(p []byte, off int64) (done bool, err error) {
	img.wmu.RLock()
	defer img.wmu.RUnlock()
	x := img.freshIndex()
	if img.corrupted || !img.writable || img.rc == nil || x == nil {
		return false, nil
	}
	cs := img.clusterSize
	var buf [2]inPlaceSpan // a 4 KiB request spans at most two clusters
	spans := buf[:0]
	for q, o := p, off; len(q) > 0; {
		c, in := o>>img.clusterBits, o&(cs-1)
		n := min(int64(len(q)), cs-in)
		_, e, bm, _, err := img.l2Entry(c)
		host := int64(e & offsetMask)
		if err != nil || e&flagCopied == 0 || e&(flagCompressed|flagZero) != 0 || host == 0 ||
			e&l2StdReserved != 0 || host&(cs-1) != 0 || img.overlapIn(x, host+in, n, 0) != "" {
			return false, nil
		}
		// With subclusters, the metadata stays unchanged only if every
		// subcluster written is already allocated.
		if m := img.scMask(in, in+n); img.extL2 && bm&m != m {
			return false, nil
		}
		if host+in+n > img.file.Length() { // the file must grow first: exclusive
			return false, nil
		}
		spans = append(spans, inPlaceSpan{host + in, q[:n]})
		q, o = q[n:], o+n
	}
	for _, s := range spans {
		if _, err := img.file.WriteAt(s.p, s.host); err != nil {
			return true, err
		}
	}
	return true, nil
}

// pending is a cluster of a write that needs a new host cluster: the
// guest data p lands at byte in of it, and the bytes [lo, hi) of the
// cluster are written (the rest of them filled from what the guest sees
// there now).
type pending struct {
	c, l2Off, host int64
	in, lo, hi     int64
	p              []byte
	old            uint64 // the entry replaced: one reference dropped once it is unreferenced
	bm             uint64 // the new subcluster bitmap (extended L2)
}

// owned reports a normal cluster the image alone references (COPIED):
// written in place.
func (img *image) owned(e uint64) bool {
	return e&flagCopied != 0 && e&flagCompressed == 0 && e&offsetMask != 0 && (img.extL2 || e&flagZero == 0)
}

func (img *image) writeLocked(p []byte, off int64) (err error) {
	cs := img.clusterSize
	var allocs []pending
	linked := 0 // allocs[:linked] are in the L2 tables
	defer func() {
		if err != nil {
			// Nothing points to the clusters taken for the rest.
			for _, a := range allocs[linked:] {
				img.rc.release(a.host/cs, 1)
			}
		}
	}()
	for len(p) > 0 {
		c := off >> img.clusterBits
		in := off & (cs - 1)
		n := min(int64(len(p)), cs-in)
		_, e, bm, _, err := img.l2Entry(c)
		if err != nil {
			return err
		}
		if img.owned(e) {
			if err := img.writeOwned(c, e, bm, in, p[:n]); err != nil {
				return err
			}
		} else {
			a, err := img.planAlloc(c, e, bm, in, p[:n])
			if err != nil {
				return err
			}
			allocs = append(allocs, a)
		}
		p, off = p[n:], off+n
	}
	if len(allocs) == 0 {
		return nil
	}
	var buf []byte
	for _, a := range allocs {
		b := a.p // the guest data covers all that is written: no copy
		if a.in != a.lo || int64(len(a.p)) != a.hi-a.lo {
			if buf == nil {
				buf = make([]byte, cs)
			}
			b = buf[:a.hi-a.lo]
			if err := img.fillAround(b, a.c*cs, a.lo, a.in, a.p); err != nil {
				return err
			}
		}
		if err := img.checkedWrite(b, a.host+a.lo, 0); err != nil {
			return err
		}
	}
	var olds []uint64
	for _, a := range allocs {
		if err := img.setL2Entry(a.l2Off, a.c, uint64(a.host)|flagCopied, a.bm); err != nil {
			img.freeAll(olds)
			return err
		}
		linked++
		if a.old != 0 {
			olds = append(olds, a.old)
		}
	}
	return img.freeAll(olds)
}

// writeOwned writes p at byte in of guest cluster c, a cluster the image
// owns (entry e, bitmap bm), in place. With subclusters, the partial
// subclusters at the edges that were not allocated get what showed
// through there, and the touched subclusters become allocated.
func (img *image) writeOwned(c int64, e, bm uint64, in int64, p []byte) error {
	cs := img.clusterSize
	host := int64(e & offsetMask)
	if e&l2StdReserved != 0 || host&(cs-1) != 0 {
		return corrupt("L2 entry %#x is invalid", e)
	}
	if !img.extL2 {
		return img.checkedWrite(p, host+in, 0)
	}
	hi := in + int64(len(p))
	mask := img.scMask(in, hi)
	if bm&mask == mask {
		return img.checkedWrite(p, host+in, 0) // all allocated already: no metadata
	}
	lo, end := img.scRound(in, hi)
	buf := make([]byte, end-lo)
	if err := img.fillAround(buf, c*cs, lo, in, p); err != nil {
		return err
	}
	if err := img.checkedWrite(buf, host+lo, 0); err != nil {
		return err
	}
	nbm := (bm | mask) &^ (mask << subclusters)
	if nbm == bm {
		return nil
	}
	l2Off, err := img.ensureL2(c >> img.l2Bits)
	if err != nil {
		return err
	}
	return img.setL2Entry(l2Off, c, e, nbm)
}

// planAlloc allocates the host cluster (and L2 table) for a write of p at
// byte in of guest cluster c, whose entry e (bitmap bm) is not owned.
// Without subclusters the whole cluster is written. With them, a
// compressed cluster becomes wholly allocated; otherwise only the
// subclusters allocated before or touched now are, so that the backing
// file still shows through the others.
func (img *image) planAlloc(c int64, e, bm uint64, in int64, p []byte) (pending, error) {
	cs := img.clusterSize
	a := pending{c: c, in: in, p: p, lo: 0, hi: cs, old: e}
	if img.extL2 && e&flagCompressed == 0 {
		if e&offsetMask == 0 && bm&allocBitmapMask != 0 || bm&(bm>>subclusters)&allocBitmapMask != 0 {
			return pending{}, corrupt("L2 entry %#x has an invalid subcluster bitmap %#x", e, bm)
		}
		alloc := bm&allocBitmapMask | img.scMask(in, in+int64(len(p)))
		zero := (bm >> subclusters) &^ alloc
		a.bm = alloc | zero<<subclusters
		a.lo = int64(bits.TrailingZeros64(alloc)) << img.scBits
		a.hi = int64(64-bits.LeadingZeros64(alloc)) << img.scBits
	} else if img.extL2 {
		a.bm = allocBitmapMask
	}
	if e&offsetMask == 0 && e&flagCompressed == 0 {
		a.old = 0
	}
	var err error
	if a.l2Off, err = img.ensureL2(c >> img.l2Bits); err != nil {
		return pending{}, err
	}
	if a.host, err = img.rc.alloc(); err != nil {
		return pending{}, err
	}
	return a, nil
}

// fillAround fills b, the bytes of guest cluster start from byte lo of
// it, with p at byte in and elsewhere what the guest sees there now
// (zeroes past the end of the image).
func (img *image) fillAround(b []byte, start, lo, in int64, p []byte) error {
	pe := in + int64(len(p))
	if err := img.readView(b[:in-lo], start+lo); err != nil {
		return err
	}
	if err := img.readView(b[pe-lo:], start+pe); err != nil {
		return err
	}
	copy(b[in-lo:], p)
	return nil
}

// readView reads what the guest sees at off (zeroes past the end).
func (img *image) readView(b []byte, off int64) error {
	clear(b)
	if n := min(int64(len(b)), img.length-off); n > 0 {
		if _, err := img.ReadAt(b[:n], off); err != nil {
			return err
		}
	}
	return nil
}

// WriteZeroes: on version 3 whole clusters get the zero flag (keeping
// their allocation unless unmap); on version 2 without a backing file
// they are deallocated with unmap; anything else is written as zeroes.
func (img *image) WriteZeroes(off, n int64, unmap bool) error {
	if err := img.begin(); err != nil {
		return err
	}
	defer img.wmu.Unlock()
	cs := img.clusterSize
	var olds []uint64
	// Entries removed in memory drop their references at the next
	// write-back, even if a later cluster fails.
	defer func() { img.freeAll(olds) }()
	for n > 0 {
		c := off >> img.clusterBits
		in := off & (cs - 1)
		k := min(n, cs-in)
		if img.extL2 {
			if err := img.zeroesExt(c, in, k, unmap, &olds); err != nil {
				return err
			}
			off, n = off+k, n-k
			continue
		}
		l2Off, e, _, err := img.l2Slot(c)
		if err != nil {
			return err
		}
		alreadyZero := e&flagCompressed == 0 && (e&flagZero != 0 || e&offsetMask == 0 && img.backing == nil)
		whole := k == cs || in == 0 && off+k >= img.length
		switch {
		case alreadyZero && (!unmap || e&offsetMask == 0):
		case whole && img.hdr.Version >= 3:
			ne := uint64(flagZero)
			if !unmap && e&flagCopied != 0 && e&flagCompressed == 0 && e&offsetMask != 0 {
				ne = e | flagZero
			} else if e != 0 {
				olds = append(olds, e)
			}
			if err := img.setEntryOwned(c, ne, 0); err != nil {
				return err
			}
		case whole && unmap && img.backing == nil && l2Off != 0:
			if e != 0 {
				if err := img.setEntryOwned(c, 0, 0); err != nil {
					return err
				}
				olds = append(olds, e)
			}
		default:
			if err := img.writeLocked(make([]byte, k), off); err != nil {
				return err
			}
		}
		off, n = off+k, n-k
	}
	return nil
}

// Discard frees whole clusters: unallocated, or with a backing file
// (version 3) zero, so that the backing file does not show through.
// Partial clusters, and version 2 images with a backing file, keep their
// data.
func (img *image) Discard(off, n int64) error {
	if err := img.begin(); err != nil {
		return err
	}
	defer img.wmu.Unlock()
	cs := img.clusterSize
	var olds []uint64
	// Entries removed in memory drop their references at the next
	// write-back, even if a later cluster fails.
	defer func() { img.freeAll(olds) }()
	for n > 0 {
		c := off >> img.clusterBits
		in := off & (cs - 1)
		k := min(n, cs-in)
		off, n = off+k, n-k
		if img.extL2 {
			if err := img.discardExt(c, in, k, &olds); err != nil {
				return err
			}
			continue
		}
		if !(k == cs || in == 0 && off >= img.length) {
			continue
		}
		l2Off, e, _, err := img.l2Slot(c)
		if err != nil {
			return err
		}
		ne := uint64(0)
		if img.backing != nil {
			if img.hdr.Version < 3 {
				continue
			}
			ne = flagZero
		} else if l2Off == 0 {
			continue
		}
		if e == ne {
			continue
		}
		if err := img.setEntryOwned(c, ne, 0); err != nil {
			return err
		}
		if e&offsetMask != 0 || e&flagCompressed != 0 {
			olds = append(olds, e)
		}
	}
	return nil
}

// Flush makes completed writes durable, metadata written back. With lazy
// refcounts the refcounts stay in memory, as in QEMU: the dirty bit on
// disk covers them.
func (img *image) Flush() error {
	img.wmu.Lock()
	defer img.wmu.Unlock()
	if !img.writable || img.rc == nil {
		return nil
	}
	if img.corrupted {
		return img.syncFile()
	}
	return img.writeBack()
}

// Truncate resizes the image: growing moves the L1 table if it must
// grow; shrinking is shrink's.
func (img *image) Truncate(size int64) error {
	if err := img.begin(); err != nil {
		return err
	}
	defer img.wmu.Unlock()
	switch {
	case size < 0:
		return fmt.Errorf("qcow2: invalid image size %d", size)
	case size%512 != 0:
		return errors.New("The new size must be a multiple of 512")
	case img.hdr.Version < 3 && len(img.snapshots) > 0:
		// Snapshots record their size only from version 3 on.
		return errV2SnapResize
	case size < img.length:
		return img.shrink(size)
	case size == img.length:
		return nil
	}
	cs := img.clusterSize
	clusters := (size + cs - 1) / cs
	need := (clusters + 1<<img.l2Bits - 1) >> img.l2Bits
	if need > maxL1Bytes/8 {
		return errors.New("qcow2: image too large: the L1 table would exceed its maximum size")
	}
	if need > int64(img.hdr.L1Size) {
		if err := img.growL1(need); err != nil {
			return err
		}
	}
	return img.setSize(size)
}

// setSize writes the header's virtual size, durably, then adopts it.
func (img *image) setSize(size int64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(size))
	if err := img.patchHeader(24, b[:]); err != nil {
		return err
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	img.hdr.Size = uint64(size)
	img.length = size
	return nil
}

// growL1 moves the L1 table to a larger one at the end of the image.
func (img *image) growL1(entries int64) error {
	cs := img.clusterSize
	n := (entries*8 + cs - 1) / cs
	off, err := img.rc.allocContiguous(n)
	if err != nil {
		return err
	}
	raw := make([]byte, n*cs)
	img.l1mu.RLock()
	for i, e := range img.l1 {
		binary.BigEndian.PutUint64(raw[8*i:], e)
	}
	img.l1mu.RUnlock()
	if err := img.checkedWrite(raw, off, 0); err != nil {
		img.rc.release(off/cs, n)
		return err
	}
	if err := img.syncRefcounts(); err != nil {
		img.rc.release(off/cs, n)
		return err
	}
	var hf [12]byte
	binary.BigEndian.PutUint32(hf[:], uint32(entries))
	binary.BigEndian.PutUint64(hf[4:], uint64(off))
	if err := img.patchHeader(36, hf[:]); err != nil {
		img.rc.release(off/cs, n)
		return err
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	oldOff, oldN := int64(img.hdr.L1TableOffset), (int64(img.hdr.L1Size)*8+cs-1)/cs
	img.l1mu.Lock()
	l1 := make([]uint64, entries)
	copy(l1, img.l1)
	img.l1 = l1
	img.hdr.L1Size, img.hdr.L1TableOffset = uint32(entries), uint64(off)
	img.l1mu.Unlock()
	img.metaChanged()
	for i := int64(0); i < oldN && oldOff != 0; i++ {
		if err := img.rc.add(oldOff/cs+i, -1); err != nil {
			return err
		}
	}
	return nil
}

// isFixedMeta: cluster 0 (the header) is never allocated.
func (img *image) isFixedMeta(k int64) bool { return k == 0 }

// PrepareReopen: becoming writable is checked here (and the image readied
// at the first write); becoming read-only flushes.
func (img *image) PrepareReopen(r *block.ReopenRequest) (block.Pending, error) {
	img.wmu.Lock()
	defer img.wmu.Unlock()
	switch {
	case r.Writable && !img.writable:
		if err := img.checkWritable(); err != nil {
			return nil, err
		}
		return &reopenPending{img: img, writable: true}, nil
	case !r.Writable && img.writable:
		if img.rc != nil && !img.corrupted {
			if err := img.markClean(); err != nil {
				return nil, err
			}
		}
		return &reopenPending{img: img, writable: false}, nil
	}
	return noChange{}, nil
}

type reopenPending struct {
	img      *image
	writable bool
}

func (p *reopenPending) Commit() {
	p.img.wmu.Lock()
	p.img.writable = p.writable
	p.img.wmu.Unlock()
}
func (p *reopenPending) Abort() {}

type noChange struct{}

func (noChange) Commit() {}
func (noChange) Abort()  {}

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
		return img.markClean()
	}
	return nil
}

// markDirty sets the dirty bit on disk (QEMU's qcow2_mark_dirty): from
// then on, refcounts on disk may be stale.
func (img *image) markDirty() error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], img.hdr.IncompatibleFeatures|incompatDirty)
	if err := img.patchHeader(72, b[:]); err != nil {
		return fmt.Errorf("qcow2: could not mark the image dirty: %w", err)
	}
	if err := img.syncFile(); err != nil {
		return fmt.Errorf("qcow2: could not mark the image dirty: %w", err)
	}
	img.hdr.IncompatibleFeatures |= incompatDirty
	return nil
}

// markClean writes back all metadata held in memory, lazy refcounts
// included, and then clears the dirty bit (QEMU's qcow2_mark_clean).
func (img *image) markClean() error {
	if err := img.writeBack(); err != nil {
		return err
	}
	rc := img.rc
	if len(rc.dirty) > 0 {
		if err := rc.writeBack(); err != nil {
			return err
		}
		if err := img.syncFile(); err != nil {
			return err
		}
	}
	if err := img.trimFile(); err != nil {
		return err
	}
	if !rc.deferred {
		return nil
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], img.hdr.IncompatibleFeatures&^incompatDirty)
	if err := img.patchHeader(72, b[:]); err != nil {
		return fmt.Errorf("qcow2: could not mark the image clean: %w", err)
	}
	if err := img.syncFile(); err != nil {
		// The clean header may reach the disk some day, the rest may not:
		// put the dirty bit back where the kernel holds it (best effort).
		binary.BigEndian.PutUint64(b[:], img.hdr.IncompatibleFeatures)
		img.patchHeader(72, b[:])
		return fmt.Errorf("qcow2: could not mark the image clean: %w", err)
	}
	img.hdr.IncompatibleFeatures &^= incompatDirty
	rc.deferred = false
	return nil
}
