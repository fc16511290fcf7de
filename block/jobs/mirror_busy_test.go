package jobs

import (
	"bytes"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/block/engine"
	"minivmm/internal/fdtest"
)

// busyGuest writes through a backend from several goroutines that never
// pause, each in its own part of the disk, keeping a shadow of it.
type busyGuest struct {
	b      *block.Backend
	shadow []byte
	stop   atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
	writes atomic.Int64
}

func startBusyGuest(b *block.Backend, shadow []byte, writers int) *busyGuest {
	g := &busyGuest{b: b, shadow: shadow}
	part := int64(len(shadow)) / int64(writers)
	for w := range writers {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			buf := make([]byte, 4096)
			for !g.stop.Load() {
				off := int64(w)*part + rng.Int63n(part/4096)*4096
				rng.Read(buf)
				if _, err := g.b.WriteAt(buf, off); err != nil {
					g.mu.Lock()
					g.errs = append(g.errs, err)
					g.mu.Unlock()
					return
				}
				copy(g.shadow[off:], buf) // each writer owns its part
				g.writes.Add(1)
			}
		}()
	}
	return g
}

func (g *busyGuest) finish(t *testing.T) []byte {
	g.stop.Store(true)
	g.wg.Wait()
	for _, err := range g.errs {
		t.Error("guest:", err)
	}
	return g.shadow
}

// TestMirrorCompletesUnderBusyGuest: block-job-complete of an active
// commit ends while writers that never pause keep going (QEMU's mirror
// waits for a quiet moment, which such a guest may never give; minivmm
// copies what is left while the guest's requests are held), and the
// base then holds exactly what the guest wrote.
func TestMirrorCompletesUnderBusyGuest(t *testing.T) {
	fdtest.Check(t)
	c := newChain(t, "")
	if err := c.g.SetReadOnly(c.base, false); err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	m := NewManager(r.emit)
	shadow := readAll(t, c.top)
	j, err := m.Start(Spec{ID: "c", Type: "commit", AutoFinalize: true, AutoDismiss: true},
		&Mirror{Graph: c.g, Source: c.top, Target: c.base, Base: c.base, Sync: engine.SyncFull, BaseWasRO: true, Filter: true})
	if err != nil {
		t.Fatal(err)
	}
	// READY needs one moment with nothing dirty (QEMU's rule too), so
	// the guest starts once the job is ready, and never pauses after.
	r.waitFor(t, "BLOCK_JOB_READY")
	guest := startBusyGuest(c.w, shadow, 3)
	for guest.writes.Load() < 100 {
		time.Sleep(time.Millisecond)
	}
	before := guest.writes.Load()
	if err := j.Complete(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-j.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("block-job-complete did not end under a busy guest (%d writes meanwhile): %+v",
			guest.writes.Load()-before, j.Info())
	}
	if guest.writes.Load() == before {
		t.Error("the guest did not write while the job completed: the test proved nothing")
	}
	want := guest.finish(t)
	if c.w.Node() != c.base {
		t.Fatalf("the backend uses %s, want the base", c.w.Node().Name())
	}
	if !bytes.Equal(readAll(t, c.base), want) {
		t.Error("the base differs from what the guest wrote")
	}
	c.g.Detach(c.w)
}
