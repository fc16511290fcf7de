package block_test

import (
	"encoding/binary"
	"sync"
	"testing"

	"minivmm/block"
)

// bitmapModel is the obvious bitmap: one bool per granule.
type bitmapModel struct {
	gran, length int64
	set          []bool
}

func (m *bitmapModel) mark(off, n int64, v bool, whole bool) {
	for i := range m.set {
		s, e := int64(i)*m.gran, min(int64(i+1)*m.gran, m.length)
		if n > 0 && (whole && off <= s && e <= off+n || !whole && off < e && s < off+n) {
			m.set[i] = v
		}
	}
}

// checkAgainstModel compares every query of b with the model's answer.
func checkAgainstModel(t *testing.T, b *block.DirtyBitmap, m *bitmapModel) {
	t.Helper()
	var count int64
	for i, v := range m.set {
		if v {
			count += min(int64(i+1)*m.gran, m.length) - int64(i)*m.gran
		}
		if got := b.Get(int64(i) * m.gran); got != v {
			t.Fatalf("granule %d: Get %v, model %v", i, got, v)
		}
	}
	if got := b.Count(); got != count {
		t.Fatalf("Count %d, model %d", got, count)
	}
	// NextDirty from every granule boundary, with a limit of 3 granules.
	for i := range m.set {
		start, n := b.NextDirty(int64(i)*m.gran, 3*m.gran)
		j := i
		for j < len(m.set) && !m.set[j] {
			j++
		}
		if j == len(m.set) {
			if n != 0 {
				t.Fatalf("NextDirty(%d): %d+%d, model none", i, start, n)
			}
			continue
		}
		k := j
		for k < len(m.set) && m.set[k] && k-j < 3 {
			k++
		}
		ws, wn := int64(j)*m.gran, min(int64(k)*m.gran, m.length)-int64(j)*m.gran
		if start != ws || n != wn {
			t.Fatalf("NextDirty(%d): %d+%d, model %d+%d", i, start, n, ws, wn)
		}
	}
}

// runBitmapOps interprets data as Set/Reset operations on a bitmap and
// its model, checking them against each other after each one.
func runBitmapOps(t *testing.T, length int64, granShift uint8, data []byte) {
	gran := int64(512) << (granShift % 6)
	length %= 1 << 20
	if length < 0 {
		length = -length
	}
	b, err := block.NewDirtyBitmap(length, gran)
	if err != nil {
		t.Fatal(err)
	}
	m := &bitmapModel{gran: gran, length: length, set: make([]bool, (length+gran-1)/gran)}
	for len(data) >= 9 {
		op := data[0]
		off := int64(binary.LittleEndian.Uint32(data[1:5])%uint32(length+gran)) - gran/2
		n := int64(binary.LittleEndian.Uint32(data[5:9]) % uint32(4*gran+length/4+1))
		data = data[9:]
		switch op % 3 {
		case 0:
			b.Set(off, n)
			m.mark(off, n, true, false)
		case 1:
			b.Reset(off, n)
			m.mark(off, n, false, true)
		case 2:
			b.SetAll()
			m.mark(0, length, true, false)
		}
		checkAgainstModel(t, b, m)
	}
}

func TestDirtyBitmapAgainstModel(t *testing.T) {
	for _, tc := range []struct {
		length int64
		shift  uint8
		ops    []byte
	}{
		{0, 0, []byte{0, 0, 0, 0, 0, 1, 0, 0, 0}},
		{1000, 0, []byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 4, 0, 0}},
		{65536*3 + 700, 4, []byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 2, 0, 1, 0, 0, 2, 0, 0, 0, 2, 0}},
		{512 * 200, 0, []byte{0, 100, 0, 0, 0, 0, 40, 0, 0, 0, 0, 80, 0, 0, 0, 100, 0, 0, 1, 0, 81, 0, 0, 0, 8, 0, 0}},
	} {
		runBitmapOps(t, tc.length, tc.shift, tc.ops)
	}
}

func FuzzDirtyBitmap(f *testing.F) {
	f.Add(int64(65536*3+700), uint8(4), []byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 2, 0})
	f.Add(int64(512*200), uint8(0), []byte{0, 100, 0, 0, 0, 0, 40, 0, 0, 1, 0, 81, 0, 0, 0, 8, 0, 0})
	f.Fuzz(func(t *testing.T, length int64, shift uint8, ops []byte) {
		runBitmapOps(t, length, shift, ops)
	})
}

func TestDirtyBitmapRefusesBadGranularity(t *testing.T) {
	for _, g := range []int64{0, 256, 1000, 3 << 10} {
		if _, err := block.NewDirtyBitmap(1<<20, g); err == nil {
			t.Errorf("granularity %d accepted", g)
		}
	}
}

// TestWritesMarkDirty: every completed write, write-zeroes and discard
// on a node marks an attached bitmap, concurrently; reads do not, and a
// removed bitmap is no longer marked.
func TestWritesMarkDirty(t *testing.T) {
	g, _ := fixture(t)
	n := mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f","discard":"unmap","filename":%q}`, image(t, 1<<20)))
	be, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Detach(be)
	bm, _ := block.NewDirtyBitmap(n.Length(), 65536)
	n.AddDirtyBitmap(bm)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(i) * 131072
			switch i % 3 {
			case 0:
				n.WriteAt(make([]byte, 4096), off+100)
			case 1:
				n.WriteZeroes(off, 512, false)
			case 2:
				n.Discard(off, 65536)
			}
			n.ReadAt(make([]byte, 4096), off+65536)
		}()
	}
	wg.Wait()
	for i := range 16 {
		if got, want := bm.Get(int64(i)*65536), i%2 == 0; got != want {
			t.Errorf("granule %d dirty %v, want %v", i, got, want)
		}
	}
	n.RemoveDirtyBitmap(bm)
	n.WriteAt(make([]byte, 1), 65536)
	if bm.Get(65536) {
		t.Error("a removed bitmap was marked")
	}
}
