package qcow2

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"minivmm/block"
	"minivmm/internal/fdtest"
)

// TestRefcountCacheBounded writes across many refcount blocks with the
// refcount block cache bounded by refcount-cache-size (and by a reopen to
// another size, and by cache-size's share): the cache never holds more
// blocks than it may (but for the blocks the writes allocate, which
// enter it as they are made), the image reads as written, and qemu-img
// check finds it clean.
func TestRefcountCacheBounded(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	const cs = 512 // a refcount block (16-bit refcounts) counts 256 clusters: 128 KiB
	for _, tc := range []struct {
		name   string
		opts   block.Options
		reopen block.Options // options of a reopen halfway (nil: none)
		bound  int
	}{
		{"minimum", block.Options{"refcount-cache-size": int64(0)}, nil, minRefcountClusters},
		{"eight", block.Options{"refcount-cache-size": int64(8 * cs)}, nil, 8},
		{"cache-size share", block.Options{"cache-size": int64(10 * cs)}, nil, minRefcountClusters},
		{"reopen smaller", block.Options{"refcount-cache-size": int64(16 * cs)}, block.Options{"refcount-cache-size": int64(5 * cs)}, 5},
		{"default", nil, nil, defaultRefcountBlocks},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "t.qcow2")
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("cluster_size=%d", cs), img, "8M")
			g := fixture(t)
			o := qcow2Options(img)
			o["read-only"], o["node-name"] = false, "q"
			for k, v := range tc.opts {
				o[k] = v
			}
			n, err := g.Add(o)
			if err != nil {
				t.Fatal(err)
			}
			b, err := g.Attach("", n, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			qimg := n.Image().(*image)
			want := make([]byte, 8<<20)
			r := rand.New(rand.NewPCG(1, 2))
			most := 0
			for i := range 600 {
				if i == 300 && tc.reopen != nil {
					ro := qcow2Options(img)
					ro["read-only"], ro["node-name"] = false, "q"
					for k, v := range tc.reopen {
						ro[k] = v
					}
					if err := g.Reopen([]block.Options{ro}); err != nil {
						t.Fatal(err)
					}
					most = 0
				}
				off := r.Int64N(int64(len(want))/cs) * cs
				p := bytes.Repeat([]byte{byte(i + 1)}, cs*(1+r.IntN(3)))
				p = p[:min(int64(len(p)), int64(len(want))-off)]
				if _, err := n.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
				copy(want[off:], p)
				qimg.wmu.RLock()
				most = max(most, len(qimg.rc.blocks))
				qimg.wmu.RUnlock()
			}
			if most > tc.bound {
				t.Errorf("the refcount cache held %d blocks; bound %d", most, tc.bound)
			}
			if got := readAll(t, n); !bytes.Equal(got, want) {
				t.Errorf("reads differ at %d", firstDiff(got, want))
			}
			g.Detach(b)
			if err := g.Delete(n.Name()); err != nil {
				t.Fatal(err)
			}
			checkClean(t, dir, img)
		})
	}
}
