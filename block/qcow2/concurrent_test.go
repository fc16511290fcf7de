package qcow2

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"minivmm/internal/fdtest"
)

// TestWriteConcurrent runs writers side by side, each on its own region:
// in-place writes (the shared fast path) race allocating writes, zero
// writes, discards and reads of other regions. Every byte must land and
// read back, and the image must check clean.
func TestWriteConcurrent(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "c.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "8M")
	const region = 1 << 20
	shadow := make([]byte, 8*region)
	func() {
		g := fixture(t)
		n, b := openRW(t, g, img)
		defer g.Detach(b)
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 7))
				base := int64(w) * region
				for i := 0; i < 400; i++ {
					off := base + rng.Int64N(region-16384)
					ln := 1 + rng.Int64N(16384)
					switch rng.IntN(10) {
					case 0:
						c := off / 4096 * 4096
						if err := n.Discard(c, 4096); err != nil {
							t.Error(err)
							return
						}
						clear(shadow[c : c+4096])
					case 1:
						if err := n.WriteZeroes(off, ln, rng.IntN(2) == 0); err != nil {
							t.Error(err)
							return
						}
						clear(shadow[off : off+ln])
					default:
						buf := bytes.Repeat([]byte{byte(1 + rng.IntN(255))}, int(ln))
						if _, err := n.WriteAt(buf, off); err != nil {
							t.Error(err)
							return
						}
						copy(shadow[off:], buf)
					}
					// Reads of its own region, through L2 slices the
					// other writers change at the same time.
					if rng.IntN(2) == 0 {
						got := make([]byte, ln)
						if _, err := n.ReadAt(got, off); err != nil {
							t.Error(err)
							return
						}
						if !bytes.Equal(got, shadow[off:off+ln]) {
							t.Errorf("writer %d: read at %d differs from what it wrote", w, off)
							return
						}
					}
				}
			}(w)
		}
		// A reader roaming over every region while they change: what it
		// reads is undefined, but it must not fail (nor race).
		done := make(chan struct{})
		roamed := make(chan struct{})
		go func() {
			defer close(roamed)
			rng := rand.New(rand.NewPCG(99, 7))
			buf := make([]byte, 16384)
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, err := n.ReadAt(buf, rng.Int64N(int64(len(shadow)-len(buf)))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		wg.Wait()
		close(done)
		<-roamed
		if err := n.Flush(); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, n); !bytes.Equal(got, shadow) {
			t.Fatal("read-back differs from what was written")
		}
	}()
	raw := filepath.Join(dir, "shadow.raw")
	if err := os.WriteFile(raw, shadow, 0o600); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, img, false)
	qemuCompare(t, img, raw)
}
