package qcow2

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"minivmm/block"
)

// scanOverlap is the overlap check without the index: every refcount
// table and L1 entry scanned, as it was done before the index existed.
// It is the oracle the indexed check must agree with.
func (img *image) scanOverlap(off, n int64, ign int) string {
	cs := img.clusterSize
	in := func(start, size int64) bool { return size > 0 && off < start+size && start < off+n }
	if in(0, cs) {
		return "qcow2_header"
	}
	h := img.hdr
	if ign&olL1 == 0 && in(int64(h.L1TableOffset), int64(h.L1Size)*8) {
		return "active L1 table"
	}
	rc := img.rc
	if ign&olRefTable == 0 && in(rc.tableOff, rc.tableClust*cs) {
		return "refcount table"
	}
	if ign&olRefblocks == 0 {
		for _, e := range rc.table {
			if e != 0 && in(int64(e&reftOffsetMask), cs) {
				return "refcount block"
			}
		}
	}
	if what := img.snap.overlap(off, n, cs, true); what != "" {
		return what
	}
	if ign&olL2 == 0 {
		for _, e := range img.l1 {
			if o := int64(e & offsetMask); o != 0 && in(o, cs) {
				return "active L2 table"
			}
		}
	}
	return ""
}

// TestOverlapIndexAgrees: after writes that allocate L2 tables and
// refcount blocks, move the refcount table and the L1 table, and shrink,
// the indexed check answers as the full scan for random ranges.
func TestOverlapIndexAgrees(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "ix.qcow2")
	const size = 4 << 20
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, itoa(size))
	qemuIO(t, img, "write -P 0x5a 0 1M")
	run(t, dir, "qemu-img", "snapshot", "-c", "s", img)
	g := fixture(t)
	n, q, err := openCapture(g, img, block_rw())
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Detach(b)
	shadow := readAll(t, n)
	r := rand.New(rand.NewPCG(5, 5))
	compare := func(stage string) {
		t.Helper()
		q.wmu.Lock()
		defer q.wmu.Unlock()
		end := q.file.Length() + 4096
		for range 3000 {
			off := r.Int64N(end)
			l := 1 + r.Int64N(3*q.clusterSize)
			ign := r.IntN(16)
			if got, want := q.overlap(off, l, ign), q.scanOverlap(off, l, ign); got != want {
				t.Fatalf("%s: overlap(%d, %d, %#x) = %q, the full scan says %q", stage, off, l, ign, got, want)
			}
		}
	}
	workload(t, n, shadow, 512, 300, 1, discardRule{})
	compare("after writes")
	if err := n.Truncate(size * 8); err != nil { // moves the L1 table
		t.Fatal(err)
	}
	shadow = append(shadow, make([]byte, size*7)...)
	workload(t, n, shadow, 512, 300, 2, discardRule{})
	compare("after growth")
	if err := n.Truncate(size / 2); err != nil {
		t.Fatal(err)
	}
	compare("after shrinking")
}

// cachedEntry points the L2 entry of guest cluster c at e in the L2
// cache only (what a corrupt table read from disk would look like).
func cachedEntry(t *testing.T, img *image, c int64, e uint64) {
	t.Helper()
	img.wmu.Lock()
	defer img.wmu.Unlock()
	l2Off, _, _, err := img.l2Slot(c)
	if err != nil || l2Off == 0 {
		t.Fatalf("cluster %d has no L2 table (%v)", c, err)
	}
	l2i := c & (1<<img.l2Bits - 1)
	sliceOff := l2Off + l2i/img.sliceEntries*img.sliceBytes
	s, err := img.cache.get(sliceOff)
	if err != nil {
		t.Fatal(err)
	}
	s = bytes.Clone(s)
	binary.BigEndian.PutUint64(s[(l2i%img.sliceEntries)*int64(img.entryWords)*8:], e)
	img.cache.put(sliceOff, s, false)
}

// TestOverlapNewMetadata: a write onto an L2 table or a refcount block
// allocated after the overlap index was last built is still refused,
// though the write itself would take the in-place path.
func TestOverlapNewMetadata(t *testing.T) {
	needQemu(t)
	for _, target := range []string{"active L2 table", "refcount block"} {
		t.Run(target, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "nm.qcow2")
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, "64M")
			g := fixture(t)
			n, q, err := openCapture(g, img, block_rw())
			if err != nil {
				t.Fatal(err)
			}
			b, err := g.Attach("", n, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Detach(b)
			p := bytes.Repeat([]byte{0x42}, 512)
			// Cluster 0 allocated, then written in place (index built).
			for range 2 {
				if _, err := n.WriteAt(p, 0); err != nil {
					t.Fatal(err)
				}
			}
			var off int64
			switch target {
			case "active L2 table": // a second L2 table (512-byte clusters: 64 entries each)
				if _, err := n.WriteAt(p, 64*512); err != nil {
					t.Fatal(err)
				}
				off = int64(q.l1[1] & offsetMask)
			default: // 256 clusters per refcount block: written until a second exists
				blocks := func() int {
					k := 0
					for _, e := range q.rc.table {
						if e != 0 {
							k++
						}
					}
					return k
				}
				before := blocks()
				for c := int64(1); blocks() == before; c++ {
					if _, err := n.WriteAt(p, c*512); err != nil {
						t.Fatal(err)
					}
				}
				for _, e := range q.rc.table {
					off = max(off, int64(e&reftOffsetMask))
				}
			}
			if off == 0 {
				t.Fatal("nothing new allocated")
			}
			cachedEntry(t, q, 0, uint64(off)|flagCopied)
			_, err = n.WriteAt(p, 0)
			if err == nil || !strings.Contains(err.Error(), "overlaps with "+target) || !errorsIsEIO(err) {
				t.Fatalf("write over the new %s: %v", target, err)
			}
		})
	}
}
