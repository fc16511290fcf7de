// Package qcow2 is the "qcow2" format driver: QEMU's copy-on-write image
// format, read through an L2 table cache, with compressed clusters
// (deflate and zstd), extended L2 entries (subclusters) and backing files.
//
// Images are written by write.go and the files it lists (refcount.go:
// refcounts and allocation; write_subcluster.go: extended L2;
// write_snapshot.go: images with internal snapshots; shrink.go:
// shrinking). The on-disk format is QEMU's
// docs/interop/qcow2.txt; the checks made at open are QEMU's, with its
// messages, so that a hostile header is refused before anything is
// allocated for it.
//
// One concept per file: header.go (the fixed header and its limits),
// extensions.go, snapshot.go (the snapshot table, read for its limits),
// options.go (QEMU's runtime options, cache sizes), l2cache.go,
// cluster.go (L1/L2 entries and address translation), compress.go,
// backing.go, fileio.go, and this file (the driver: open, read, block
// status).
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"minivmm/block"
)

func init() {
	block.Register(&block.Driver{
		Name:      "qcow2",
		Format:    true,
		Probe:     probeHeader,
		Options:   options,
		Open:      open,
		ChildPerm: childPerm,
		// As QEMU's filename rule: the image's filename still names a
		// node given its data file as an option.
		Weak:        []string{"data-file"},
		JoinOptions: joinOptions,
		// As QEMU's qcow2_update_options: what a reopen may change.
		Reopenable: append([]string{"lazy-refcounts", "pass-discard-request", "pass-discard-snapshot",
			"pass-discard-other", "overlap-check", "cache-clean-interval",
			"cache-size", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size"}, overlapFlatKeys()...),
	})
}

// probeHeader claims images that start with the qcow2 magic and a version
// of at least 2 (a version this driver refuses is still qcow2, and is
// refused by name).
func probeHeader(b []byte, _ string) int {
	if len(b) >= v2HeaderLen && binary.BigEndian.Uint32(b) == magic && binary.BigEndian.Uint32(b[4:]) >= 2 {
		return 100
	}
	return 0
}

// image is an open qcow2 image.
type image struct {
	file    *block.Node
	data    *block.Node // where data clusters are: file, or the data file (datafile.go)
	backing *block.Node // nil: unallocated clusters read as zeroes

	hdr         *header
	ext         *extensions
	snapshots   []snapshot
	backingName string // from the header ("" if none)
	length      int64

	mapper
	compressed *clusterCache

	// The write path (write.go): wmu is held exclusively by every write
	// that changes metadata, and shared by writes into clusters the image
	// already owns (writeInPlace); rc is set at the first write.
	wmu       sync.RWMutex
	writable  bool
	corrupted bool
	rc        *refcounts
	lazy      bool           // lazy refcounts (refcount.go)
	snap      *snapMeta      // what internal snapshots own, kept from writes
	metaGen   uint64         // bumped when a metadata location changes (overlap.go), under wmu
	metaIdx   *metaIndex     // the overlap check's index, as of some metaGen
	l2Dirty   map[int64]bool // L2 slices changed in memory only, by file offset
	frees     []freed        // entries removed in memory: references dropped at writeBack
	flushErr  error          // the file child's first failed flush (syncFile), under wmu

	// grown: ensureFile has grown the file (from lenBeforeGrowth), in
	// steps whose unused tail trimFile cuts.
	grown           bool
	lenBeforeGrowth int64

	preallocOnce sync.Once // metadataPreallocated, decided once
	prealloc     bool
	comp         compState // where compressed writes pack (compress_write.go), under wmu
	// beforeWrite, if set (by a test, on the image it opened), runs
	// before every write of the exclusive path, under wmu: the file then
	// is what a crash there leaves.
	beforeWrite func()

	// passDiscard: which freed clusters are discarded in the file
	// (passdiscard.go), from the pass-discard-* options.
	passDiscard passDiscard
	// refcountBlocks bounds the refcount block cache (refcount-cache-size).
	refcountBlocks int

	// reportCorruption tells the monitor (BLOCK_IMAGE_CORRUPTED).
	reportCorruption func(msg string, offset, size int64, fatal bool)
	// warn reports a failure QEMU prints and carries on after.
	warn      func(msg string, err error)
	signalled atomic.Bool // a non-fatal corruption was reported
	// dead: a fatal corruption was signalled; every request fails with
	// ENOMEDIUM from then on, as QEMU's node loses its driver.
	dead atomic.Bool
}

func open(o *block.OpenContext) (block.Image, error) {
	file := o.Child("file")
	img := &image{file: file, writable: o.Writable, reportCorruption: o.ReportCorruption(), warn: o.ReportWarning(), l2Dirty: map[int64]bool{}}
	err := img.readHeader(o)
	if err != nil {
		return nil, err
	}
	if err := img.openDataFile(o); err != nil {
		return nil, err
	}
	if err := img.openBacking(o); err != nil {
		return nil, err
	}
	lazy, err := o.Options.Bool("lazy-refcounts", img.hdr.CompatibleFeatures&compatLazyRefcounts != 0)
	if err != nil {
		return nil, err
	}
	img.lazy = lazy
	if img.passDiscard, err = readPassDiscard(o.Options, o.Unmap); err != nil {
		return nil, err
	}
	if o.Writable {
		// Refused now; the image is readied (a dirty one repaired) at the
		// first write, when the file child has its writer.
		if err := img.checkWritable(); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// readHeader reads and checks cluster 0 and the tables it points to, in
// QEMU's order, refusing what QEMU refuses before allocating anything
// sized by the header.
func (img *image) readHeader(o *block.OpenContext) error {
	c0, err := readCluster0(img.file)
	if err != nil {
		return err
	}
	h := c0.h
	if h.IncompatibleFeatures&incompatCorrupt != 0 && o.Writable {
		return errors.New("qcow2: Image is corrupt; cannot be opened read/write")
	}
	if err := h.checkTables(); err != nil {
		return err
	}
	cache, err := readCacheSizes(o.Options, h)
	if err != nil {
		return err
	}
	if err := checkOtherOptions(o.Options, h); err != nil {
		return err
	}
	x, backingName, snaps, err := c0.finish(img.file)
	if err != nil {
		return err
	}
	img.backingName, img.snapshots = backingName, snaps
	img.hdr, img.ext, img.length = h, x, int64(h.Size&^511)

	// The L1 table: only what lies inside the file is read (and
	// allocated); entries past its end read as zero, as in QEMU.
	l1Bytes := int64(h.L1Size) * 8
	if avail := img.file.Length() - int64(h.L1TableOffset); avail < l1Bytes {
		l1Bytes = max(0, avail) &^ 7
	}
	raw := make([]byte, l1Bytes)
	if err := readFile(img.file, raw, int64(h.L1TableOffset)); err != nil {
		return fmt.Errorf("Could not read L1 table: %w", err)
	}
	l1 := make([]uint64, len(raw)/8)
	for i := range l1 {
		l1[i] = binary.BigEndian.Uint64(raw[8*i:])
	}
	img.geometry = newGeometry(h, cache.sliceBytes)
	img.refcountBlocks = cache.refcountBlocks
	img.l1 = l1
	img.cache = newL2Cache(cache.sliceBytes, cache.l2Slices, func(p []byte, off int64) error { img.file.Event("l2_load"); return readFile(img.file, p, off) })
	img.compressed = newClusterCache(h.clusterSize())
	return nil
}

// openBacking sets up the backing child: the one the options name
// (already opened by the graph), none if they say null, else the one the
// header names.
func (img *image) openBacking(o *block.OpenContext) error {
	if v, given := o.Options["backing"]; given {
		if v != nil {
			img.backing = o.Child("backing")
		}
		return nil
	}
	if img.hdr.BackingFileOffset == 0 {
		return nil
	}
	b, err := openBacking(o, img.backingName, img.ext.BackingFormat, img.file.Filename())
	if err != nil {
		return err
	}
	img.backing = b
	return nil
}

// ReadAt reads guest bytes: each extent from where it maps to. Data is
// read from the file outside any lock of the cache. Corrupt metadata on
// the way is signalled as QEMU signals it.
func (img *image) ReadAt(p []byte, off int64) (int, error) {
	if img.dead.Load() {
		return 0, errDead
	}
	n, err := img.readAt(p, off)
	if err != nil {
		img.signalCorruption(err)
	}
	return n, err
}

// readAt is ReadAt without the corruption signal (the write path reads
// through it with img.wmu held, and signals what it returns itself).
func (img *image) readAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		ext, err := img.extentAt(off, int64(len(p)-done))
		if err != nil {
			return done, err
		}
		buf := p[done : done+int(ext.n)]
		if err := img.checkDataHost(ext.kind, ext.host, off); err != nil {
			return done, err
		}
		switch ext.kind {
		case extData:
			err = img.readData(buf, ext.host)
		case extZero:
			clear(buf)
		case extUnallocated:
			err = img.readBacking(buf, off)
		case extCompressed:
			err = img.readCompressed(buf, off, ext.l2e)
		}
		if err != nil {
			return done, err
		}
		done += int(ext.n)
		off += ext.n
	}
	return done, nil
}

// readBacking reads an unallocated range from the backing file: zeroes
// where there is none, or past its end.
func (img *image) readBacking(p []byte, off int64) error {
	if img.backing == nil {
		clear(p)
		return nil
	}
	blen := img.backing.Length()
	if off >= blen {
		clear(p)
		return nil
	}
	if n := blen - off; int64(len(p)) > n {
		clear(p[n:])
		p = p[:n]
	}
	img.file.Event("read_backing_aio")
	_, err := img.backing.ReadAt(p, off)
	return err
}

// readCompressed reads from a compressed cluster, decompressing it
// unless it is among the last few decompressed.
func (img *image) readCompressed(p []byte, off int64, l2e uint64) error {
	cs := img.clusterSize
	data := img.compressed.get(l2e)
	if data == nil {
		coff, csize := img.compressedRange(l2e)
		src := make([]byte, csize)
		img.file.Event("read_compressed")
		if err := readFile(img.file, src, coff); err != nil {
			return err
		}
		data = make([]byte, cs)
		if err := decompress(img.hdr.CompressionType, data, src); err != nil {
			return &decompressError{off: coff, err: err}
		}
		img.compressed.put(l2e, data)
	}
	copy(p, data[off&(cs-1):])
	return nil
}

// BlockStatus describes the range at off as qemu-img map does: data and
// zero, allocated at this node or not, and for ranges the backing chain
// provides, its depth.
func (img *image) BlockStatus(off, n int64) (block.Status, int64, error) {
	if img.dead.Load() {
		return block.Status{}, 0, errDead
	}
	ext, err := img.extentAt(off, n)
	if err != nil {
		img.signalCorruption(err)
		return block.Status{}, 0, err
	}
	if err := img.checkDataHost(ext.kind, ext.host, off); err != nil {
		return block.Status{}, 0, err
	}
	switch ext.kind {
	case extData:
		st := block.Status{Data: true, Allocated: true, Offset: ext.host}
		// In an image whose metadata was preallocated, the file knows
		// which clusters were never written (they read as zeroes); QEMU
		// asks it then only, and so does minivmm.
		if !img.metadataPreallocated() {
			return st, ext.n, nil
		}
		if flen := img.data.Length(); ext.host >= flen {
			st.Zero = true
		} else {
			fst, fn, err := img.data.BlockStatus(ext.host, min(ext.n, flen-ext.host))
			if err != nil {
				return block.Status{}, 0, err
			}
			st.Zero = fst.Zero && !fst.Data
			ext.n = fn
		}
		return st, ext.n, nil
	case extZero:
		st := block.Status{Zero: true, Allocated: true, Offset: -1}
		if ext.hasHost {
			st.Offset = ext.host // zero-alloc: QEMU reports where it is
		}
		return st, ext.n, nil
	case extCompressed:
		return block.Status{Data: true, Allocated: true, Offset: -1}, ext.n, nil
	}
	if img.backing == nil || off >= img.backing.Length() {
		return block.Status{Zero: true, Offset: -1}, ext.n, nil
	}
	bst, bn, err := img.backing.BlockStatus(off, min(ext.n, img.backing.Length()-off))
	if err != nil {
		return block.Status{}, 0, err
	}
	return block.Status{Data: bst.Data, Zero: bst.Zero, Depth: bst.Depth + 1, Offset: -1}, bn, nil
}

func (img *image) Length() (int64, error) { return img.length, nil }

// Filename is the file child's.
func (img *image) Filename() string { return img.file.Filename() }

// DirtyFlag is the header's dirty bit (refcounts may be stale).
func (img *image) DirtyFlag() bool { return img.hdr.IncompatibleFeatures&incompatDirty != 0 }

// ActualSize is what the file child occupies.
func (img *image) ActualSize() (int64, error) {
	if size := img.file.Info().ActualSize; size >= 0 {
		return size, nil
	}
	return 0, block.ErrNotSupported
}
