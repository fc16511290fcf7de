package qcow2

import (
	"bytes"
	"compress/flate"
	"math/rand/v2"
	"sync"
	"testing"

	"minivmm/block"
)

// mixedImage is a 4 KiB-cluster image over a raw backing file (0xbb,
// shorter than the image) whose clusters cycle through every kind; want
// is what it reads as.
func mixedImage(t *testing.T) (path, base string, want []byte) {
	const cs, clusters = 4096, 512
	img := newTestImage(12, clusters*cs)
	want = make([]byte, clusters*cs)
	baseLen := clusters * cs * 3 / 4
	copy(want, bytes.Repeat([]byte{0xbb}, baseLen))
	for i := 0; i < clusters; i++ {
		c := want[i*cs : (i+1)*cs]
		switch i % 5 {
		case 0: // data
			fill := byte(i)
			img.setL2(i, uint64(img.dataCluster(fill))|flagCopied)
			for j := range c {
				c[j] = fill
			}
		case 1: // zero
			img.setL2(i, flagZero)
			clear(c)
		case 2: // compressed: bytes counting up from i
			for j := range c {
				c[j] = byte(i + j)
			}
			var buf bytes.Buffer
			w, _ := flate.NewWriter(&buf, flate.BestSpeed)
			w.Write(c)
			w.Close()
			host := int64(len(img.buf)) + 100 // not sector aligned
			img.put(host, buf.Bytes())
			end := host + int64(buf.Len())
			sectors := (end-1)/512 - host/512
			img.setL2(i, flagCompressed|uint64(host)|uint64(sectors)<<(62-(12-8)))
		default: // unallocated: backing, or zeroes past its end
		}
	}
	path = img.write(t)
	base = writeTemp(t, "base.raw", bytes.Repeat([]byte{0xbb}, baseLen))
	return path, base, want
}

func openMixed(t *testing.T, g *block.Graph, path, base string, extra block.Options) *block.Node {
	t.Helper()
	if _, err := g.Add(block.Options{"driver": "raw", "node-name": "base", "read-only": true,
		"file": block.Options{"driver": "file", "filename": base}}); err != nil {
		t.Fatal(err)
	}
	o := block.Options{"backing": "base"}
	for k, v := range extra {
		o[k] = v
	}
	n, err := openQcow2(g, path, o)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestReadMixed(t *testing.T) {
	path, base, want := mixedImage(t)
	g := fixture(t)
	n := openMixed(t, g, path, base, nil)
	if got := readAll(t, n); !bytes.Equal(got, want) {
		t.Fatalf("differs at byte %d", firstDiff(got, want))
	}
	// Status of each kind.
	for _, w := range []struct {
		cluster           int64
		data, zero, alloc bool
		depth             int
		offset            bool
	}{
		{0, true, false, true, 0, true},
		{1, false, true, true, 0, false},
		{2, true, false, true, 0, false},
		{3, true, false, false, 1, false},
		{509, false, true, false, 0, false}, // past the backing file's end
	} {
		st, l, err := n.BlockStatus(w.cluster*4096, 4096)
		if err != nil || l != 4096 {
			t.Fatalf("cluster %d: %v, %d bytes", w.cluster, err, l)
		}
		if st.Data != w.data || st.Zero != w.zero || st.Allocated != w.alloc || st.Depth != w.depth || (st.Offset >= 0) != w.offset {
			t.Errorf("cluster %d: %+v", w.cluster, st)
		}
	}
	info := n.Info()
	if info.ActualSize <= 0 || info.Driver != "qcow2" || !info.ReadOnly {
		t.Errorf("info %+v", info)
	}
	if err := n.Flush(); err != nil {
		t.Errorf("flush: %v", err)
	}
}

// TestConcurrentReads reads the mixed image from many goroutines with an
// L2 cache of two 512-byte slices (constant eviction) and with the
// default one; run with -race.
func TestConcurrentReads(t *testing.T) {
	path, base, want := mixedImage(t)
	for _, opts := range []block.Options{nil, {"l2-cache-size": int64(1024), "l2-cache-entry-size": int64(512)}} {
		g := fixture(t)
		n := openMixed(t, g, path, base, opts)
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), 5))
				buf := make([]byte, 64<<10)
				for range 300 {
					off := r.IntN(len(want))
					b := buf[:1+r.IntN(min(len(buf), len(want)-off))]
					if _, err := n.ReadAt(b, int64(off)); err != nil {
						t.Error(err)
						return
					}
					if !bytes.Equal(b, want[off:off+len(b)]) {
						t.Errorf("%d bytes at %d differ at %d", len(b), off, off+firstDiff(b, want[off:]))
						return
					}
					if r.IntN(4) == 0 {
						if _, _, err := n.BlockStatus(int64(off), int64(len(b))); err != nil {
							t.Error(err)
							return
						}
					}
				}
			}()
		}
		wg.Wait()
	}
}
