package block

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// runs lists the dirty areas NextDirtyArea finds in [start, end).
func runs(b *DirtyBitmap, start, end int64) [][2]int64 {
	var out [][2]int64
	for {
		ds, n, ok := b.NextDirtyArea(start, end)
		if !ok {
			return out
		}
		out = append(out, [2]int64{ds, n})
		start = ds + n
	}
}

func TestNextDirtyArea(t *testing.T) {
	b, err := NewDirtyBitmap(1<<20+100, 4096)
	if err != nil {
		t.Fatal(err)
	}
	b.Set(4096+1, 10)     // granule 1
	b.Set(3*4096, 2*4096) // granules 3, 4
	b.Set(64*4096-1, 2)   // granules 63, 64 (across a word)
	b.Set(1<<20+50, 1)    // the short last granule
	for _, tt := range []struct {
		start, end int64
		want       [][2]int64
	}{
		{0, 1 << 21, [][2]int64{{4096, 4096}, {3 * 4096, 2 * 4096}, {63 * 4096, 2 * 4096}, {1 << 20, 100}}},
		{5000, 14000, [][2]int64{{5000, 3192}, {3 * 4096, 14000 - 3*4096}}},
		{8192, 12288, nil},
		{1<<20 + 10, 1<<20 + 20, [][2]int64{{1<<20 + 10, 10}}},
		{1<<20 + 100, 1 << 21, nil},
	} {
		if got := runs(b, tt.start, tt.end); !slices.Equal(got, tt.want) {
			t.Errorf("[%d, %d): %v, want %v", tt.start, tt.end, got, tt.want)
		}
	}
	if got := b.dirtyBytes(); got != 6*4096 {
		t.Errorf("dirty bytes %d, want whole granules %d", got, 6*4096)
	}
}

// TestMergeGranularities: merging sets every target granule a source's
// dirty byte range touches, whatever the two granularities.
func TestMergeGranularities(t *testing.T) {
	for _, tt := range []struct {
		dst, src int64
		set      [2]int64
		want     [][2]int64
	}{
		{4096, 65536, [2]int64{70000, 1}, [][2]int64{{65536, 65536}}},
		{65536, 4096, [2]int64{70000, 5000}, [][2]int64{{65536, 65536}}},
		{512, 512, [2]int64{1024, 512}, [][2]int64{{1024, 512}}},
	} {
		dst, _ := NewDirtyBitmap(1<<20, tt.dst)
		src, _ := NewDirtyBitmap(1<<20, tt.src)
		src.Set(tt.set[0], tt.set[1])
		dst.merge(src)
		if got := runs(dst, 0, 1<<20); !slices.Equal(got, tt.want) {
			t.Errorf("%d into %d: %v, want %v", tt.src, tt.dst, got, tt.want)
		}
	}
}

func newBitmapGraph(t *testing.T) *Graph {
	t.Helper()
	fdtest.Check(t)
	g := NewGraph(qemuopen.New(qemuopen.Config{}))
	t.Cleanup(func() { g.Close() })
	for i, size := range []int64{1 << 20, 1 << 19} {
		img := filepath.Join(t.TempDir(), "img")
		mustTruncate(t, img, size)
		if _, err := g.AddRoot(Options{"driver": "file", "filename": img, "node-name": fmt.Sprintf("n%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// TestBitmapTransactionRollback: a failing transaction undoes every
// bitmap action before it, in reverse; a good one keeps them all.
func TestBitmapTransactionRollback(t *testing.T) {
	g := newBitmapGraph(t)
	must := func(a BitmapAction) {
		t.Helper()
		if err := g.Bitmaps(a); err != nil {
			t.Fatal(err)
		}
	}
	must(BitmapAction{Op: "add", Node: "n0", Name: "a", Granularity: 4096, HasGranularity: true})
	must(BitmapAction{Op: "add", Node: "n0", Name: "b", Disabled: true})
	n0, _ := g.Node("n0")
	a := n0.findBitmap("a")
	a.Set(0, 100)
	state := func() string { return fmt.Sprint(n0.DirtyBitmaps()) }
	before := state()
	err := g.Snapshot([]SnapshotAction{
		{Bitmap: &BitmapAction{Op: "add", Node: "n0", Name: "c"}},
		{Bitmap: &BitmapAction{Op: "clear", Node: "n0", Name: "a"}},
		{Bitmap: &BitmapAction{Op: "enable", Node: "n0", Name: "b"}},
		{Bitmap: &BitmapAction{Op: "merge", Node: "n0", Name: "b", Sources: []BitmapRef{{Name: "a"}}}},
		{Bitmap: &BitmapAction{Op: "remove", Node: "n0", Name: "a"}},
		{Bitmap: &BitmapAction{Op: "merge", Node: "n0", Name: "b", Sources: []BitmapRef{{Node: "n1", Name: "x"}}}},
	})
	if err == nil || err.Error() != "Dirty bitmap 'x' not found" {
		t.Fatalf("transaction: %v", err)
	}
	if after := state(); after != before {
		t.Errorf("a failed transaction left\n%s\nnot\n%s", after, before)
	}
	must(BitmapAction{Op: "add", Node: "n1", Name: "x"})
	if err := g.Bitmaps(BitmapAction{Op: "merge", Node: "n0", Name: "b", Sources: []BitmapRef{{Node: "n1", Name: "x"}}}); err == nil ||
		err.Error() != "Bitmaps are of different sizes (destination size is 1048576, source size is 524288) and can't be merged" {
		t.Errorf("merge of another size: %v", err)
	}
	if err := g.Snapshot([]SnapshotAction{
		{Bitmap: &BitmapAction{Op: "merge", Node: "n0", Name: "b", Sources: []BitmapRef{{Name: "a"}}}},
		{Bitmap: &BitmapAction{Op: "clear", Node: "n0", Name: "a"}},
		{Bitmap: &BitmapAction{Op: "remove", Node: "n1", Name: "x"}},
	}); err != nil {
		t.Fatal(err)
	}
	want := "[{b false false false 65536 65536} {a true false false 4096 0}]"
	if got := state(); got != want {
		t.Errorf("after the transaction %s, want %s", got, want)
	}
	if n1, _ := g.Node("n1"); n1.DirtyBitmaps() != nil {
		t.Errorf("x not removed: %v", n1.DirtyBitmaps())
	}
}

func mustTruncate(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// TestBitmapCommandsUnderWrites: the monitor's operations on a bitmap
// race with writes marking it (run with -race): clear, merge, enable,
// disable and the queries while writes complete on the node.
func TestBitmapCommandsUnderWrites(t *testing.T) {
	g := newBitmapGraph(t)
	n0, _ := g.Node("n0")
	b, err := g.Attach("", n0, Perm{Write: true, ShareWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Detach(b)
	for _, a := range []BitmapAction{
		{Op: "add", Node: "n0", Name: "a", Granularity: 512, HasGranularity: true},
		{Op: "add", Node: "n0", Name: "c"},
	} {
		if err := g.Bitmaps(a); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for i := int64(0); i < 2000; i++ {
			if _, err := n0.WriteAt(buf, (i*4096*7)%(1<<20-4096)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	ops := []BitmapAction{
		{Op: "clear", Node: "n0", Name: "a"},
		{Op: "merge", Node: "n0", Name: "c", Sources: []BitmapRef{{Name: "a"}}},
		{Op: "disable", Node: "n0", Name: "a"},
		{Op: "enable", Node: "n0", Name: "a"},
	}
	for i := 0; ; i++ {
		select {
		case <-done:
			if got := n0.DirtyBitmaps(); len(got) != 2 || got[0].Count == 0 {
				t.Errorf("after the writes: %+v", got)
			}
			return
		default:
		}
		if err := g.Bitmaps(ops[i%len(ops)]); err != nil {
			t.Fatal(err)
		}
		n0.DirtyBitmaps()
	}
}
