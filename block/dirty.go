package block

import (
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
)

// DirtyBitmap records which granules of a node were written since it was
// attached (QEMU's BdrvDirtyBitmap, as a mirror uses it). A granule is
// set when a write, write-zeroes or discard touching it completes, so
// that a copy that clears a granule before reading it sees every write
// that ends after the clear as a new mark. It is safe for concurrent use.
type DirtyBitmap struct {
	shift  uint // log2 of the granularity
	length int64

	mu    sync.Mutex
	words []uint64
	count int64 // granules set

	// A user's bitmap (bitmap.go) has a name and its node; a job's own
	// has neither.
	name string
	node *Node
	// disabled: completed writes leave it as it is (not recording).
	disabled atomic.Bool
	// busy: an export or a transaction holds it; the monitor may not
	// change it (set under the graph's mu).
	busy atomic.Bool
}

// NewDirtyBitmap is an empty bitmap over length bytes; granularity is a
// power of two, at least 512 bytes.
func NewDirtyBitmap(length, granularity int64) (*DirtyBitmap, error) {
	if granularity < 512 || granularity&(granularity-1) != 0 {
		return nil, fmt.Errorf("granularity %d is not a power of two of at least 512", granularity)
	}
	if length < 0 {
		return nil, fmt.Errorf("negative length %d", length)
	}
	shift := uint(bits.TrailingZeros64(uint64(granularity)))
	granules := (length + granularity - 1) >> shift
	return &DirtyBitmap{shift: shift, length: length, words: make([]uint64, (granules+63)/64)}, nil
}

// Granularity is the bytes one bit covers.
func (b *DirtyBitmap) Granularity() int64 { return 1 << b.shift }

// Length is the bytes the bitmap covers.
func (b *DirtyBitmap) Length() int64 { return b.length }

// span is the granules [first, end) that [off, off+n) touches, clipped to
// the bitmap.
func (b *DirtyBitmap) span(off, n int64) (first, end int64) {
	if off < 0 {
		n += off
		off = 0
	}
	if n <= 0 || off >= b.length {
		return 0, 0
	}
	stop := min(off+n, b.length)
	return off >> b.shift, (stop + 1<<b.shift - 1) >> b.shift
}

// Set marks every granule [off, off+n) touches.
func (b *DirtyBitmap) Set(off, n int64) {
	first, end := b.span(off, n)
	b.mu.Lock()
	b.count += b.apply(first, end, true)
	b.mu.Unlock()
}

// SetAll marks the whole bitmap.
func (b *DirtyBitmap) SetAll() { b.Set(0, b.length) }

// Reset clears the granules [off, off+n) covers whole; a granule it only
// touches stays set (a part of it was not copied). The end of the bitmap
// counts as a granule boundary.
func (b *DirtyBitmap) Reset(off, n int64) {
	if off < 0 {
		n += off
		off = 0
	}
	if n <= 0 || off >= b.length {
		return
	}
	g := int64(1) << b.shift
	first := (off + g - 1) >> b.shift
	end := (off + n) >> b.shift
	if off+n >= b.length {
		end = (b.length + g - 1) >> b.shift
	}
	if first >= end {
		return
	}
	b.mu.Lock()
	b.count -= b.apply(first, end, false)
	b.mu.Unlock()
}

// apply sets or clears granules [first, end) and returns how many
// changed. b.mu is held.
func (b *DirtyBitmap) apply(first, end int64, set bool) int64 {
	var changed int64
	for i := first; i < end; {
		w := i / 64
		lo := uint(i % 64)
		hi := uint(min(end-w*64, 64))
		mask := ^uint64(0) << lo
		if hi < 64 {
			mask &= 1<<hi - 1
		}
		old := b.words[w]
		if set {
			b.words[w] |= mask
			changed += int64(bits.OnesCount64(mask &^ old))
		} else {
			b.words[w] &^= mask
			changed += int64(bits.OnesCount64(mask & old))
		}
		i = (w + 1) * 64
	}
	return changed
}

// Get says whether the granule holding off is set.
func (b *DirtyBitmap) Get(off int64) bool {
	if off < 0 || off >= b.length {
		return false
	}
	i := off >> b.shift
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.words[i/64]&(1<<(i%64)) != 0
}

// Count is the bytes the set granules cover (the last one counts only up
// to the end).
func (b *DirtyBitmap) Count() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.count << b.shift
	if tail := b.length & (1<<b.shift - 1); tail != 0 {
		// The last granule is short: it covers only tail bytes.
		i := (b.length - 1) >> b.shift
		if b.words[i/64]&(1<<(i%64)) != 0 {
			c -= 1<<b.shift - tail
		}
	}
	return c
}

// NextDirty finds the first set granule at or after off and returns the
// run of set granules starting there, as a byte range of at most max
// bytes (clipped to the end), but never less than one granule; n is 0
// when none is set.
func (b *DirtyBitmap) NextDirty(off, limit int64) (start, n int64) {
	if off < 0 {
		off = 0
	}
	if off >= b.length || limit <= 0 {
		return 0, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	granules := (b.length + 1<<b.shift - 1) >> b.shift
	i := off >> b.shift
	for i < granules {
		w := b.words[i/64] >> (i % 64)
		if w != 0 {
			i += int64(bits.TrailingZeros64(w))
			break
		}
		i = (i/64 + 1) * 64
	}
	if i >= granules {
		return 0, 0
	}
	maxGranules := max(1, limit>>b.shift)
	j := i
	for j < granules && j-i < maxGranules && b.words[j/64]&(1<<(j%64)) != 0 {
		j++
	}
	start = i << b.shift
	return start, min(j<<b.shift, b.length) - start
}

// dirtySet is the bitmaps a node marks; replaced whole on change, so that
// a write reads it with one atomic load.
type dirtySet []*DirtyBitmap

// AddDirtyBitmap makes every write on n that completes from now on mark
// b. Writes in flight when it is added may or may not mark it: the
// caller drains n first where that matters.
func (n *Node) AddDirtyBitmap(b *DirtyBitmap) {
	n.dirtyMu.Lock()
	defer n.dirtyMu.Unlock()
	var cur dirtySet
	if p := n.dirty.Load(); p != nil {
		cur = *p
	}
	next := append(slices.Clone(cur), b)
	n.dirty.Store(&next)
}

// RemoveDirtyBitmap stops b's marking.
func (n *Node) RemoveDirtyBitmap(b *DirtyBitmap) {
	n.dirtyMu.Lock()
	defer n.dirtyMu.Unlock()
	p := n.dirty.Load()
	if p == nil {
		return
	}
	next := slices.DeleteFunc(slices.Clone(*p), func(x *DirtyBitmap) bool { return x == b })
	if len(next) == 0 {
		n.dirty.Store(nil)
		return
	}
	n.dirty.Store(&next)
}

// markDirty is the write path's hook: a completed request on [off,
// off+length), successful or not (a failed write may have changed part of
// the range), marks every bitmap attached.
func (n *Node) markDirty(off, length int64) {
	if p := n.dirty.Load(); p != nil {
		for _, b := range *p {
			if !b.disabled.Load() {
				b.Set(off, length)
			}
		}
	}
}
