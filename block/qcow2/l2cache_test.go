package qcow2

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// slicesFrom makes a loader whose slice at off holds off+i in entry i,
// counting loads.
func slicesFrom(loads *atomic.Int64) func(p []byte, off int64) error {
	return func(p []byte, off int64) error {
		loads.Add(1)
		for i := 0; i < len(p)/8; i++ {
			binary.BigEndian.PutUint64(p[8*i:], uint64(off)+uint64(i))
		}
		return nil
	}
}

func TestL2CacheLRU(t *testing.T) {
	var loads atomic.Int64
	c := newL2Cache(512, 2, slicesFrom(&loads))
	get := func(off int64) {
		t.Helper()
		s, err := c.get(off)
		if err != nil || len(s) != 512 || entry(s, 3) != uint64(off)+3 {
			t.Fatalf("get(%d): %v, %v", off, s, err)
		}
	}
	get(0)
	get(512)
	get(0)    // 0 is now the most recent
	get(1024) // evicts 512
	if loads.Load() != 3 {
		t.Fatalf("%d loads, want 3", loads.Load())
	}
	get(0)
	if loads.Load() != 3 {
		t.Fatalf("0 was evicted (least recently used was 512)")
	}
	get(512)
	if loads.Load() != 4 || c.len() != 2 {
		t.Fatalf("%d loads, %d held", loads.Load(), c.len())
	}
	// 1024 was used before 0 (the last of the hits): 1024 went.
	get(0)
	if loads.Load() != 4 {
		t.Fatalf("0 evicted instead of 1024")
	}
}

// TestL2CacheOneLoad: concurrent misses on one slice read it once.
func TestL2CacheOneLoad(t *testing.T) {
	var loads atomic.Int64
	release := make(chan struct{})
	slow := slicesFrom(&loads)
	c := newL2Cache(512, 4, func(p []byte, off int64) error {
		<-release
		return slow(p, off)
	})
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s, err := c.get(4096); err != nil || entry(s, 0) != 4096 {
				t.Errorf("get: %v", err)
			}
		}()
	}
	close(release)
	wg.Wait()
	if loads.Load() != 1 {
		t.Errorf("%d loads, want 1", loads.Load())
	}
}

// TestL2CacheErrorNotKept: a failed read is retried by the next request.
func TestL2CacheErrorNotKept(t *testing.T) {
	var loads atomic.Int64
	fail := errors.New("EIO")
	ok := slicesFrom(&loads)
	c := newL2Cache(512, 4, func(p []byte, off int64) error {
		if loads.Load() == 0 {
			loads.Add(1)
			return fail
		}
		return ok(p, off)
	})
	if _, err := c.get(0); !errors.Is(err, fail) {
		t.Fatalf("first get: %v", err)
	}
	if s, err := c.get(0); err != nil || entry(s, 1) != 1 {
		t.Fatalf("second get: %v", err)
	}
}

// TestL2CacheConcurrent hammers a small cache from many goroutines (run
// with -race): every slice read is the right one.
func TestL2CacheConcurrent(t *testing.T) {
	var loads atomic.Int64
	c := newL2Cache(512, 8, slicesFrom(&loads))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 5000 {
				off := int64(r.IntN(12)) * 512
				s, err := c.get(off)
				if err != nil || entry(s, 7) != uint64(off)+7 {
					t.Errorf("get(%d): %v", off, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := c.len(); n > 8 {
		t.Errorf("holds %d slices, max 8", n)
	}
}

// TestL2CacheSampledEviction: a large cache stays within its size.
func TestL2CacheSampledEviction(t *testing.T) {
	var loads atomic.Int64
	c := newL2Cache(512, 1000, slicesFrom(&loads))
	for i := range 5000 {
		if _, err := c.get(int64(i) * 512); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.len(); n != 1000 {
		t.Errorf("holds %d slices, want 1000", n)
	}
}

func entry(s []byte, i int) uint64 { return binary.BigEndian.Uint64(s[8*i:]) }
