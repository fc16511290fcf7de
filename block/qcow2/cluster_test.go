package qcow2

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
)

// expect describes what a range of a test image must read as.
type expect struct {
	off, n int64
	fill   byte // every byte
}

func checkRead(t *testing.T, n *block.Node, want []expect) {
	t.Helper()
	for _, w := range want {
		buf := make([]byte, w.n)
		if _, err := n.ReadAt(buf, w.off); err != nil {
			t.Fatalf("read %d+%d: %v", w.off, w.n, err)
		}
		for i, b := range buf {
			if b != w.fill {
				t.Errorf("read %d+%d: byte %d is %#x, want %#x", w.off, w.n, w.off+int64(i), b, w.fill)
				break
			}
		}
	}
}

// TestL2EntryTypes builds one cluster of every kind and reads them, with
// and without a backing file (raw, filled with 0xbb, shorter than the
// image).
func TestL2EntryTypes(t *testing.T) {
	const cs = 4096
	img := newTestImage(12, 16*cs)
	normal := img.dataCluster(0x11)
	zeroAllocHost := img.dataCluster(0x22) // must not be read
	img.setL2(0, uint64(normal)|flagCopied)
	img.setL2(1, flagZero)                                  // zero-plain
	img.setL2(2, uint64(zeroAllocHost)|flagZero|flagCopied) // zero-alloc
	// 3: unallocated
	img.setL2(4, uint64(normal)) // normal without COPIED (shared) reads the same
	path := img.write(t)
	base := writeTemp(t, "base.raw", bytes.Repeat([]byte{0xbb}, 3*cs+512))

	t.Run("no backing", func(t *testing.T) {
		g := fixture(t)
		n, err := openQcow2(g, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkRead(t, n, []expect{{0, cs, 0x11}, {cs, cs, 0}, {2 * cs, cs, 0}, {3 * cs, cs, 0}, {4 * cs, cs, 0x11}, {5 * cs, 11 * cs, 0}})
		// One read across all kinds.
		all := readAll(t, n)
		if all[cs-1] != 0x11 || all[cs] != 0 || all[4*cs] != 0x11 {
			t.Error("a read across cluster kinds differs from reads of each")
		}
	})
	t.Run("raw backing, shorter", func(t *testing.T) {
		g := fixture(t)
		if _, err := g.Add(block.Options{"driver": "raw", "node-name": "base", "read-only": true,
			"file": block.Options{"driver": "file", "filename": base}}); err != nil {
			t.Fatal(err)
		}
		n, err := openQcow2(g, path, block.Options{"backing": "base"})
		if err != nil {
			t.Fatal(err)
		}
		// Zero clusters hide the backing file; unallocated ones show it,
		// and zeroes past its end (3 clusters + 512 bytes).
		checkRead(t, n, []expect{{0, cs, 0x11}, {cs, cs, 0}, {2 * cs, cs, 0}, {3 * cs, 512, 0xbb},
			{3*cs + 512, cs - 512, 0}, {5 * cs, cs, 0}})
	})
}

// TestCorruptEntries: reserved bits and unaligned offsets fail the read
// with EIO (QEMU signals corruption); the rest of the image still reads.
func TestCorruptEntries(t *testing.T) {
	const cs = 4096
	for _, tc := range []struct {
		name  string
		setup func(*testImage)
	}{
		{"L1 reserved bit", func(i *testImage) { i.put(3*cs, be64(4*cs|flagCopied|1<<60)) }},
		{"L1 unaligned", func(i *testImage) { i.put(3*cs, be64(4*cs+512)) }},
		{"L2 reserved bit", func(i *testImage) { i.setL2(0, uint64(i.dataCluster(1))|1<<57) }},
		{"L2 reserved low bit", func(i *testImage) { i.setL2(0, uint64(i.dataCluster(1))|1<<3) }},
		{"L2 unaligned", func(i *testImage) { i.setL2(0, uint64(i.dataCluster(1))+512) }},
		{"zero-alloc unaligned", func(i *testImage) { i.setL2(0, uint64(i.dataCluster(1))+512|flagZero) }},
		{"bad compressed stream", func(i *testImage) {
			host := i.dataCluster(0xff)
			i.setL2(0, flagCompressed|uint64(host)|1<<(62-(12-8)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := newTestImage(12, 1<<20)
			tc.setup(img)
			img.setL2(1, uint64(img.dataCluster(0x33))|flagCopied)
			path := img.write(t)
			g := fixture(t)
			n, err := openQcow2(g, path, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = n.ReadAt(make([]byte, 512), 0)
			if !errors.Is(err, unix.EIO) {
				t.Fatalf("read: %v, want EIO", err)
			}
			t.Log(err)
			if _, _, err := n.BlockStatus(0, 512); !errors.Is(err, unix.EIO) && tc.name != "bad compressed stream" {
				t.Errorf("block status: %v, want EIO", err)
			}
			if tc.name != "L1 reserved bit" && tc.name != "L1 unaligned" {
				checkRead(t, n, []expect{{cs, cs, 0x33}})
			}
		})
	}
}

func be64(v uint64) []byte {
	b := make([]byte, 8)
	for i := range b {
		b[i] = byte(v >> (56 - 8*i))
	}
	return b
}

// TestExtendedL2 reads clusters whose 32 subclusters mix allocated, zero
// and unallocated (backing) ones, and refuses invalid bitmaps.
func TestExtendedL2(t *testing.T) {
	const cs, sc = 16384, 512
	img := newTestImage(14, 8*cs)
	img.h.IncompatibleFeatures |= incompatExtL2
	host := img.dataCluster(0x11)
	// Cluster 0: subclusters 0-3 allocated, 4-7 zero, 8-15 unallocated,
	// 16 allocated, 17-31 zero.
	alloc := uint64(0xf | 1<<16)
	zero := uint64(0xf0 | 0xfffe0000)
	img.setL2(0, uint64(host)|flagCopied, alloc|zero<<32)
	// Cluster 1: unallocated cluster, subclusters 0-15 zero-plain.
	img.setL2(1, 0, 0xffff<<32)
	// Cluster 2: all allocated; bit 0 of the descriptor is not a zero flag.
	host2 := img.dataCluster(0x22)
	img.setL2(2, uint64(host2)|flagZero, 0xffffffff)
	// Cluster 3: allocated cluster, nothing allocated in it: backing.
	img.setL2(3, uint64(img.dataCluster(0x33)), 0)
	// Cluster 4: invalid, both bits for subcluster 5.
	img.setL2(4, uint64(img.dataCluster(0x44)), 1<<5|1<<37)
	// Cluster 5: invalid, allocated subclusters in an unallocated cluster.
	img.setL2(5, 0, 1)
	path := img.write(t)
	base := writeTemp(t, "base.raw", bytes.Repeat([]byte{0xbb}, 8*cs))

	g := fixture(t)
	if _, err := g.Add(block.Options{"driver": "raw", "node-name": "base", "read-only": true,
		"file": block.Options{"driver": "file", "filename": base}}); err != nil {
		t.Fatal(err)
	}
	n, err := openQcow2(g, path, block.Options{"backing": "base"})
	if err != nil {
		t.Fatal(err)
	}
	checkRead(t, n, []expect{
		{0, 4 * sc, 0x11}, {4 * sc, 4 * sc, 0}, {8 * sc, 8 * sc, 0xbb}, {16 * sc, sc, 0x11}, {17 * sc, 15 * sc, 0},
		{cs, 16 * sc, 0}, {cs + 16*sc, 16 * sc, 0xbb},
		{2 * cs, cs, 0x22},
		{3 * cs, cs, 0xbb},
	})
	// One read across the mixed cluster, unaligned.
	buf := make([]byte, cs)
	if _, err := n.ReadAt(buf, 100); err != nil {
		t.Fatal(err)
	}
	for i, b := range buf {
		off := int64(i) + 100
		want := byte(0)
		switch sci := off / sc; {
		case off >= cs:
			want = 0
		case sci < 4 || sci == 16:
			want = 0x11
		case sci >= 8 && sci < 16:
			want = 0xbb
		}
		if b != want {
			t.Fatalf("byte %d: %#x, want %#x", off, b, want)
		}
	}
	// Block status follows subclusters.
	for _, w := range []struct {
		off, n    int64
		data, zer bool
		depth     int
	}{
		{0, 4 * sc, true, false, 0}, {4 * sc, 4 * sc, false, true, 0}, {8 * sc, 8 * sc, true, false, 1},
		// Zero subclusters of an allocated cluster (zero-alloc, with an
		// offset in QEMU's block status) end where zero-plain ones begin.
		{16 * sc, sc, true, false, 0}, {17 * sc, 15 * sc, false, true, 0}, {cs, 16 * sc, false, true, 0},
	} {
		st, l, err := n.BlockStatus(w.off, 8*cs-w.off)
		if err != nil {
			t.Fatal(err)
		}
		if l != w.n || st.Data != w.data || st.Zero != w.zer || st.Depth != w.depth {
			t.Errorf("status at %d: %+v for %d bytes; want data=%v zero=%v depth=%d for %d", w.off, st, l, w.data, w.zer, w.depth, w.n)
		}
	}
	for _, off := range []int64{4 * cs, 5 * cs} {
		if _, err := n.ReadAt(make([]byte, 512), off); !errors.Is(err, unix.EIO) {
			t.Errorf("read of invalid bitmap at %d: %v", off, err)
		}
	}
}

// TestCompressedRange is the spec's arithmetic for compressed descriptors.
func TestCompressedRange(t *testing.T) {
	for _, tc := range []struct {
		bits       uint32
		entry      uint64
		off, csize int64
	}{
		// 64 KiB clusters: x = 62 - 8 = 54 bits of offset.
		{16, 0x12345 | 3<<54, 0x12345, 4*512 - 0x145},
		{16, 0x200 | 0<<54, 0x200, 512},
		// 512-byte clusters: x = 61; one bit of sector count.
		{9, 0x1000 | 1<<61, 0x1000, 1024},
		// 2 MiB clusters: x = 49; 13 bits of sector count.
		{21, 0x1ff | 0x1fff<<49, 0x1ff, 0x2000*512 - 0x1ff},
	} {
		g := newGeometry(&header{ClusterBits: tc.bits}, 512)
		off, size := g.compressedRange(tc.entry | flagCompressed)
		if off != tc.off || size != tc.csize {
			t.Errorf("cluster bits %d, entry %#x: %#x+%d, want %#x+%d", tc.bits, tc.entry, off, size, tc.off, tc.csize)
		}
	}
}

// TestL2Slices reads through small cache slices (l2-cache-entry-size) and
// a cache too small for the image's tables.
func TestL2Slices(t *testing.T) {
	const cs = 4096
	img := newTestImage(12, 512*cs+cs*cs/8) // two L2 tables
	for i := 0; i < 512; i += 7 {
		img.setL2(i, uint64(img.dataCluster(byte(i)))|flagCopied)
	}
	// Second L2 table.
	l2b := img.dataCluster(0)
	img.put(3*cs+8, be64(uint64(l2b)|flagCopied))
	d := img.dataCluster(0xee)
	img.put(l2b+8*5, be64(uint64(d)|flagCopied))
	path := img.write(t)
	for _, opts := range []block.Options{
		nil,
		{"l2-cache-entry-size": 512},
		{"l2-cache-size": 1024, "l2-cache-entry-size": 512},
	} {
		g := fixture(t)
		n, q, err := openCapture(g, path, opts)
		if err != nil {
			t.Fatal(err)
		}
		var want []expect
		for i := 0; i < 512; i++ {
			fill := byte(0)
			if i%7 == 0 {
				fill = byte(i)
			}
			want = append(want, expect{int64(i) * cs, cs, fill})
		}
		want = append(want, expect{(512 + 5) * cs, cs, 0xee}, expect{(512 + 6) * cs, cs, 0})
		checkRead(t, n, want)
		checkRead(t, n, want)
		if q.cache.len() > q.cache.max {
			t.Errorf("%v: cache holds %d slices, max %d", opts, q.cache.len(), q.cache.max)
		}
		t.Logf("%v: slice %d bytes, %d slices max, %d misses", opts, q.cache.sliceBytes, q.cache.max, q.cache.misses.Load())
	}
}
