package qcow2

import (
	"sync"
	"sync/atomic"
)

// l2Cache holds L2 table slices (QEMU's l2-cache-entry-size: a whole
// table, or a power-of-two part of one), as on disk (big-endian entries),
// keyed by their offset in the image file, up to a fixed number of
// slices; the least recently used is evicted.
//
// It is read-mostly: a hit takes the read lock only (and marks the slice
// used with an atomic store), so concurrent requests do not serialize on
// it; a miss takes the write lock only to insert a placeholder, and reads
// the slice from the file outside any lock, while others wanting the
// same slice wait for that one read. Slices are never modified once
// loaded (the write path replaces them with put), so a request may keep using one the cache has since evicted.
//
// A slice the write path changed but has not written back yet is pinned:
// never evicted (it would be read back stale), until unpinned.
type l2Cache struct {
	load       func(p []byte, off int64) error // reads file bytes
	sliceBytes int
	max        int // slices

	mu      sync.RWMutex
	entries map[int64]*l2Slice

	// clock orders uses: a slice used is stamped with a new tick, unless
	// it already holds the latest one (the common case of many requests in
	// a row to one slice, which then touch no shared cache line but the
	// lock's). Eviction takes the slice with the oldest stamp.
	clock atomic.Uint64

	// recent is the slice the last hit found: a run of requests to one
	// slice (sequential IO) skips the lock and the map. It is trusted
	// only while the slice is still the map's entry for its offset
	// (!stale): the map drops or replaces it only under mu, marking it.
	recent atomic.Pointer[l2Slice]

	misses atomic.Uint64 // for tests and benchmarks
}

type l2Slice struct {
	off     int64         // where the slice is in the file
	stale   atomic.Bool   // no longer the cache's entry for off
	ready   chan struct{} // closed once data or err is set
	loaded  atomic.Bool   // ready is closed (a fast check before <-ready)
	data    []byte
	err     error
	lastUse atomic.Uint64
	pinned  bool // under l2Cache.mu
}

func newL2Cache(sliceBytes, max int, load func(p []byte, off int64) error) *l2Cache {
	return &l2Cache{load: load, sliceBytes: sliceBytes, max: max, entries: map[int64]*l2Slice{}}
}

// get returns the slice at file offset off, reading it on a miss. The
// returned bytes must not be modified.
func (c *l2Cache) get(off int64) ([]byte, error) {
	if s := c.recent.Load(); s != nil && s.off == off && !s.stale.Load() {
		c.touch(s)
		return s.data, nil
	}
	c.mu.RLock()
	s := c.entries[off]
	c.mu.RUnlock()
	if s == nil {
		c.mu.Lock()
		if s = c.entries[off]; s == nil {
			return c.fill(off) // unlocks
		}
		c.mu.Unlock()
	}
	c.touch(s)
	if !s.loaded.Load() {
		<-s.ready
	}
	if s.err == nil {
		c.recent.Store(s)
	}
	return s.data, s.err
}

// touch marks s used now.
func (c *l2Cache) touch(s *l2Slice) {
	if s.lastUse.Load() != c.clock.Load() {
		s.lastUse.Store(c.clock.Add(1))
	}
}

// remove drops the entry at off (c.mu held), so that no request takes
// it from recent any more.
func (c *l2Cache) remove(off int64) {
	if s := c.entries[off]; s != nil {
		s.stale.Store(true)
		delete(c.entries, off)
	}
}

// fill is a miss: it inserts a placeholder (evicting if full), drops the
// lock, reads the slice and publishes it. c.mu is held on entry.
func (c *l2Cache) fill(off int64) ([]byte, error) {
	c.misses.Add(1)
	if len(c.entries) >= c.max {
		c.evictLocked()
	}
	s := &l2Slice{off: off, ready: make(chan struct{})}
	s.lastUse.Store(c.clock.Add(1))
	c.entries[off] = s
	c.mu.Unlock()

	data := make([]byte, c.sliceBytes)
	err := c.load(data, off)
	if err == nil {
		s.data = data
	} else {
		// A failed read is not remembered: the next request tries again.
		s.err = err
		c.mu.Lock()
		if c.entries[off] == s {
			c.remove(off)
		}
		c.mu.Unlock()
	}
	s.loaded.Store(true)
	close(s.ready)
	return s.data, s.err
}

// evictSample bounds the work of choosing a victim in large caches: the
// least recently used of this many slices (Go's map iteration starts at a
// random place) is evicted; small caches are scanned whole, exact LRU.
const evictSample = 64

func (c *l2Cache) evictLocked() {
	var victim int64
	var oldest uint64
	found := false
	seen := 0
	for off, s := range c.entries {
		if s.pinned {
			continue
		}
		if use := s.lastUse.Load(); !found || use < oldest {
			victim, oldest, found = off, use, true
		}
		if seen++; seen >= evictSample && len(c.entries) > 4*evictSample {
			break
		}
	}
	if found {
		c.remove(victim)
	}
}

// len is the number of slices held.
func (c *l2Cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// put replaces the slice at off with data (the write path's updated
// copy), pinned or not; requests holding the old slice keep reading it.
func (c *l2Cache) put(off int64, data []byte, pinned bool) {
	s := &l2Slice{off: off, ready: make(chan struct{}), data: data, pinned: pinned}
	s.loaded.Store(true)
	close(s.ready)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[off]; !ok && len(c.entries) >= c.max {
		c.evictLocked()
	}
	c.remove(off)
	s.lastUse.Store(c.clock.Add(1))
	c.entries[off] = s
}

// unpin lets the slice at off be evicted again (it was written back).
func (c *l2Cache) unpin(off int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.entries[off]; s != nil {
		s.pinned = false
	}
}
