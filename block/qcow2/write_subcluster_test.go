package qcow2

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"minivmm/block"
)

// TestWriteExtL2Bitmaps: writes, zero writes and discards on an
// extended-L2 image over a backing file touch exactly the subclusters
// they cover; the rest still shows the backing file.
func TestWriteExtL2Bitmaps(t *testing.T) {
	needQemu(t)
	const cs, sc = 65536, 2048
	dir := t.TempDir()
	base := bytes.Repeat([]byte{0xbb}, 1<<20)
	os.WriteFile(filepath.Join(dir, "base.raw"), base, 0o600)
	img := filepath.Join(dir, "ext.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k", "-b", "base.raw", "-F", "raw", img, "1M")
	qemuIO(t, img, "write -c -P 0x77 128k 64k") // cluster 2 compressed
	shadow := append([]byte(nil), base...)
	copy(shadow[128<<10:], bytes.Repeat([]byte{0x77}, cs))

	g := fixture(t)
	n, q, err := openCapture(g, img, block.Options{"read-only": false, "discard": "unmap"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	bits := func(lo, hi int) uint64 { return (1<<hi - 1) &^ (1<<lo - 1) }
	steps := []struct {
		name   string
		do     func() error
		cl     int64
		bitmap uint64
	}{
		{"unaligned write allocates subclusters 2-3", func() error { return write(n, shadow, cs+5000, 3000, 0x11) }, 1, bits(2, 4)},
		{"write in place sets subcluster 19", func() error { return write(n, shadow, cs+19*sc+100, 100, 0x12) }, 1, bits(2, 4) | 1<<19},
		{"rewrite of allocated subclusters keeps the bitmap", func() error { return write(n, shadow, cs+4096, 4096, 0x13) }, 1, bits(2, 4) | 1<<19},
		{"zero whole subclusters 5-6 and part of 7", func() error { return zero(n, shadow, cs+5*sc, 2*sc+100, false) }, 1, bits(2, 4) | 1<<19 | 1<<7 | bits(5, 7)<<32},
		{"discard subcluster 2 reads zeroes", func() error { return discard(n, shadow, cs+2*sc, sc, sc) }, 1, 1<<3 | 1<<19 | 1<<7 | (bits(5, 7)|1<<2)<<32},
		{"write into a compressed cluster allocates it all", func() error { return write(n, shadow, 2*cs+10, 10, 0x14) }, 2, allocBitmapMask},
		{"whole-cluster zero keeps the allocation", func() error { return zero(n, shadow, cs, cs, false) }, 1, allZeroBitmap},
		{"write over zero subclusters", func() error { return write(n, shadow, cs+sc+1, 1, 0x15) }, 1, 1<<1 | (allocBitmapMask&^2)<<32},
		{"whole-cluster discard", func() error { return discard(n, shadow, 2*cs, cs, cs) }, 2, allZeroBitmap},
		{"write at the image end", func() error { return write(n, shadow, 1<<20-100, 100, 0x16) }, 15, 1 << 31},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		_, e, bm, _, err := q.l2Entry(s.cl)
		if err != nil {
			t.Fatal(err)
		}
		if bm != s.bitmap {
			t.Errorf("%s: bitmap %#x (entry %#x), want %#x", s.name, bm, e, s.bitmap)
		}
		if got := readAll(t, n); !bytes.Equal(got, shadow) {
			t.Fatalf("%s: read back differs at %d", s.name, firstDiff(got, shadow))
		}
	}
	g.Detach(b)
	g.Delete(n.Name())
	qemuCheck(t, img, false)
	raw := filepath.Join(dir, "shadow.raw")
	os.WriteFile(raw, shadow, 0o600)
	qemuCompare(t, img, raw)
}

func write(n *block.Node, shadow []byte, off, l int64, v byte) error {
	p := bytes.Repeat([]byte{v}, int(l))
	copy(shadow[off:], p)
	_, err := n.WriteAt(p, off)
	return err
}

func zero(n *block.Node, shadow []byte, off, l int64, unmap bool) error {
	clear(shadow[off : off+l])
	return n.WriteZeroes(off, l, unmap)
}

// discard discards [off, off+l) and zeroes its whole units of grain in
// shadow.
func discard(n *block.Node, shadow []byte, off, l, grain int64) error {
	for u := (off + grain - 1) &^ (grain - 1); u+grain <= off+l; u += grain {
		clear(shadow[u : u+grain])
	}
	return n.Discard(off, l)
}
