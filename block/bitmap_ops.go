package block

import (
	"math/bits"
	"slices"
)

// The operations on a bitmap's bits that the monitor's commands and the
// NBD export need beyond a job's (dirty.go).

// dirtyBytes is QEMU's hbitmap_count: the dirty granules times the
// granularity, the last granule whole even where the node ends inside it.
func (b *DirtyBitmap) dirtyBytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.count << b.shift
}

// bitmapBackup is a bitmap's bits as they were, for a transaction that
// fails.
type bitmapBackup struct {
	words []uint64
	count int64
}

func (b *DirtyBitmap) backup() *bitmapBackup {
	b.mu.Lock()
	defer b.mu.Unlock()
	return &bitmapBackup{words: slices.Clone(b.words), count: b.count}
}

// clear empties b and returns what it held.
func (b *DirtyBitmap) clear() *bitmapBackup {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := &bitmapBackup{words: b.words, count: b.count}
	b.words, b.count = make([]uint64, len(b.words)), 0
	return old
}

// restore puts back what backup or clear returned; writes completed in
// between are lost from b, as they are in QEMU's restore.
func (b *DirtyBitmap) restore(old *bitmapBackup) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.words, b.count = old.words, old.count
}

// merge sets in b every byte range src has dirty (hbitmap_merge: the
// granularities may differ; b's granules touched by a dirty range of
// src's become dirty).
func (b *DirtyBitmap) merge(src *DirtyBitmap) {
	if src == b {
		return
	}
	var runs [][2]int64
	for off := int64(0); ; {
		start, n, ok := src.NextDirtyArea(off, src.length)
		if !ok {
			break
		}
		runs = append(runs, [2]int64{start, n})
		off = start + n
	}
	for _, r := range runs {
		b.Set(r[0], r[1])
	}
}

// NextDirtyArea is QEMU's hbitmap_next_dirty_area: the first run of dirty
// bytes in [start, end) (end clipped to the bitmap), as a byte range that
// begins no earlier than start and ends at the first clean granule or at
// end.
func (b *DirtyBitmap) NextDirtyArea(start, end int64) (dirtyStart, n int64, ok bool) {
	end = min(end, b.length)
	if start < 0 {
		start = 0
	}
	if start >= end {
		return 0, 0, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	last := (end - 1) >> b.shift // the granule end falls in
	i, found := b.scan(start>>b.shift, last, true)
	if !found {
		return 0, 0, false
	}
	dirtyStart = max(start, i<<b.shift)
	j, found := b.scan(i, last, false)
	stop := end
	if found {
		stop = min(end, j<<b.shift)
	}
	return dirtyStart, stop - dirtyStart, true
}

// scan finds the first granule in [from, to] that is set (or clear).
// b.mu is held.
func (b *DirtyBitmap) scan(from, to int64, set bool) (int64, bool) {
	for i := from; i <= to; {
		w := b.words[i/64]
		if !set {
			w = ^w
		}
		w >>= uint(i % 64)
		if w != 0 {
			i += int64(bits.TrailingZeros64(w))
			return i, i <= to
		}
		i = (i/64 + 1) * 64
	}
	return 0, false
}
