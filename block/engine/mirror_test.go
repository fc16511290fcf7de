package engine

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/internal/fdtest"
)

// shadow is what the guest must see: the writer records each write as
// pending before it is sent and applies it once it completes, so a
// checker that looks while a write is held back knows both possibilities.
type shadow struct {
	mu      sync.Mutex
	data    []byte
	pending *pendingWrite
}

type pendingWrite struct {
	off int64
	p   []byte
}

// matches: got is the shadow, or the shadow with the pending write.
func (s *shadow) matches(got []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes.Equal(got, s.data) {
		return true
	}
	if s.pending == nil {
		return false
	}
	with := bytes.Clone(s.data)
	copy(with[s.pending.off:], s.pending.p)
	return bytes.Equal(got, with)
}

// writer keeps writing 4 KiB (and sometimes 100 KiB) blocks of random
// data at random offsets through b until stop is closed.
func writer(t *testing.T, b *block.Backend, s *shadow, stop <-chan struct{}, seed uint64) (done func() int) {
	r := rand.New(rand.NewPCG(seed, 1))
	var wg sync.WaitGroup
	var count int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			l := int64(4096)
			if r.IntN(8) == 0 {
				l = 100 << 10
			}
			off := r.Int64N(int64(len(s.data))-l) &^ 511
			p := make([]byte, l)
			for i := range p {
				p[i] = byte(r.Uint32())
			}
			s.mu.Lock()
			s.pending = &pendingWrite{off, p}
			s.mu.Unlock()
			if _, err := b.WriteAt(p, off); err != nil {
				t.Errorf("guest write at %d: %v", off, err)
				return
			}
			s.mu.Lock()
			copy(s.data[off:], p)
			s.pending = nil
			s.mu.Unlock()
			count++
		}
	}()
	return func() int { wg.Wait(); return count }
}

// newTarget adds an empty qcow2 node of size bytes, written by a backend.
func newTarget(t testing.TB, g *block.Graph, dir, name string, size int64) *block.Node {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name+".qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := qcow2.Create(qcow2.FdTarget(int(f.Fd())), qcow2.CreateOptions{Size: uint64(size)}); err != nil {
		t.Fatal(err)
	}
	n, err := g.Add(block.Options{"driver": "qcow2", "node-name": name,
		"file": block.Options{"driver": "file", "filename": f.Name()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Attach("", n, block.Perm{Write: true}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestMirrorWithWriter: while a writer keeps writing to the source, a
// mirror of each sync mode (and the active-commit shape, into the
// source's own base) converges, and when stopped returns with the source
// held and the target holding exactly what the guest sees; after the
// release the source still reads as the shadow.
func TestMirrorWithWriter(t *testing.T) {
	fdtest.Check(t)
	for _, tc := range []struct {
		name   string
		sync   MirrorSync
		commit bool
	}{
		{"full", SyncFull, false},
		{"top", SyncTop, false},
		{"none", SyncNone, false},
		{"active-commit", SyncFull, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, top, base, dir := chain(t)
			length := top.Length()
			s := &shadow{data: read(t, top, 0, length)}
			be, err := g.Attach("guest", top, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			var dst *block.Node
			o := MirrorOptions{Sync: tc.sync, Granularity: 64 << 10, BufSize: 1 << 20}
			switch {
			case tc.commit:
				dst, o.Base = base, base
			case tc.sync == SyncFull:
				dst = newTarget(t, g, dir, "target", length)
			default:
				// top and none: the target shares the source's backing
				// file, and (for none) starts as a copy of the source.
				dst = newTarget(t, g, dir, "target", length)
				if tc.sync == SyncNone {
					if _, err := dst.WriteAt(s.data, 0); err != nil {
						t.Fatal(err)
					}
				} else if _, err := dst.WriteAt(read(t, base, 0, length), 0); err != nil {
					// The base's content stands in for a backing file.
					t.Fatal(err)
				}
			}
			var ready, stop atomic.Bool
			o.Ready = func() { ready.Store(true) }
			o.Stop = stop.Load
			var progressed atomic.Int64
			o.Progress = func(done, total int64) {
				if done > total {
					t.Errorf("progress %d of %d", done, total)
				}
				progressed.Store(done)
			}
			m, err := NewMirror(top, dst, o)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			stopWriter := make(chan struct{})
			writes := writer(t, be, s, stopWriter, uint64(len(tc.name)))
			go func() {
				for !ready.Load() {
					time.Sleep(time.Millisecond)
				}
				time.Sleep(50 * time.Millisecond) // writes after READY too
				stop.Store(true)
				m.Kick()
			}()
			release, err := m.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !s.matches(read(t, dst, 0, length)) {
				t.Fatal("target differs from the guest's view at the switch")
			}
			release()
			close(stopWriter)
			n := writes()
			if got := read(t, top, 0, length); !bytes.Equal(got, s.data) {
				t.Fatal("source differs from the shadow after the release")
			}
			if n == 0 || progressed.Load() == 0 {
				t.Fatalf("%d guest writes, %d bytes copied: the test proved nothing", n, progressed.Load())
			}
		})
	}
}

// TestMirrorCancel: cancelling at any moment ends Run with no copy left
// running, the source not held, and the source's content untouched.
func TestMirrorCancel(t *testing.T) {
	fdtest.Check(t)
	for i := range 5 {
		g, top, _, dir := chain(t)
		length := top.Length()
		s := &shadow{data: read(t, top, 0, length)}
		be, err := g.Attach("guest", top, block.Perm{Write: true})
		if err != nil {
			t.Fatal(err)
		}
		dst := newTarget(t, g, dir, "target", length)
		lim := NewRate(8 << 20)
		m, err := NewMirror(top, dst, MirrorOptions{Sync: SyncFull, Options: Options{Limiter: lim}, Stop: func() bool { return false }})
		if err != nil {
			t.Fatal(err)
		}
		stopWriter := make(chan struct{})
		writes := writer(t, be, s, stopWriter, uint64(i))
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i*20)*time.Millisecond)
		release, err := m.Run(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || release != nil {
			t.Fatalf("Run: %v, release %v", err, release != nil)
		}
		if m.busy() {
			t.Fatal("copies still running after Run returned")
		}
		m.Close()
		close(stopWriter)
		writes()
		if !bytes.Equal(read(t, top, 0, length), s.data) {
			t.Fatal("source changed by a cancelled mirror")
		}
	}
}

// TestMirrorTargetTooShort: a target shorter than the source is refused
// before anything is attached.
func TestMirrorTargetTooShort(t *testing.T) {
	fdtest.Check(t)
	g, top, _, dir := chain(t)
	dst := newTarget(t, g, dir, "small", mib)
	if _, err := NewMirror(top, dst, MirrorOptions{}); err == nil {
		t.Fatal("a target shorter than the source was accepted")
	}
}
