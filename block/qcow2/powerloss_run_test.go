package qcow2

// The power-loss harness's runs: a seeded random workload on an image of
// one kind, written through a recording faultdisk (see
// powerloss_judge_test.go for what is done with the recording).

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"minivmm/block"
	"minivmm/block/faultdisk"
)

const sector = 512

// plKind is one kind of image the harness crashes writers of.
type plKind struct {
	name     string
	opts     string // qemu-img create -o
	size     int64  // virtual size: small, every crash state reads all of it
	ops      int    // guest operations in a run
	snapshot bool   // data written and an internal snapshot taken first (by QEMU)
	backing  string // "raw" or "qcow2": a backing file of random data
	compress bool   // made by qemu-img convert -c; the run writes compressed clusters too
	noResize bool   // the guest never grows the disk (QEMU refuses: a v2 image with snapshots)
	// allocRange: some writes go by range allocation (alloc_range.go:
	// CopyRangeTo's path, the data put by writes) and some ranges are
	// preallocated.
	allocRange bool
	// reuse: many discards of whole clusters among the writes, whose
	// clusters the writes then reuse (reuse.go), passed down to the file.
	reuse bool
}

// maxGrowth bounds how far a run grows the disk: three times its size
// moves the L1 table of small-cluster images.
const maxGrowth = 3

// guestOp is one guest operation of a run, as the shadow model needs it:
// the disk's operation numbers before and after it, and the sectors it
// changed with what they read after it (by hash).
type guestOp struct {
	name      string
	flush     bool  // a flush (or the close): completed, everything before it must be durable
	size      int64 // the disk's size after it
	start     int64
	end       int64
	firstSect int64
	hashes    []uint64
	data      []byte // the sectors' bytes
}

// plRun is a recorded run: the journal of the image's file and the
// guest's operations.
type plRun struct {
	kind        plKind
	dir         string
	img         string // the image as created (the run itself went to memory)
	cs          int64
	seed        maphash.Seed
	initial     []uint64 // hash of each sector before the run
	initialData []byte
	ops         []guestOp
	journal     *faultdisk.Journal

	mu     sync.Mutex
	bases  map[int][]uint64       // memo of at(): the sectors after each flush
	shadow map[[2]int]*allowedSet // memo of at(), by the last completed flush and the last started operation
}

// plOptions is a qcow2 node over the fault driver; filename makes a
// relative backing file name resolve next to the image.
func plOptions(img string, rw bool) block.Options {
	o := block.Options{"driver": "qcow2", "file": block.Options{"driver": "fault", "filename": img}}
	if rw {
		o["read-only"] = false
		o["discard"] = "unmap"
	} else {
		o["read-only"] = true
	}
	return o
}

// createImage makes the kind's image with QEMU in dir.
func (k plKind) createImage(t *testing.T, dir string) string {
	t.Helper()
	img := filepath.Join(dir, "pl.qcow2")
	args := []string{"create", "-q", "-f", "qcow2", "-o", k.opts}
	switch k.backing {
	case "raw", "qcow2":
		base := make([]byte, k.size*3/4) // shorter than the overlay
		r := rand.New(rand.NewPCG(uint64(k.size), 11))
		for i := range base {
			base[i] = byte(r.Uint32())
		}
		bp := filepath.Join(dir, "base.raw")
		if err := os.WriteFile(bp, base, 0o600); err != nil {
			t.Fatal(err)
		}
		if k.backing == "qcow2" {
			raw := bp
			bp = filepath.Join(dir, "base.qcow2")
			run(t, dir, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, bp)
		}
		args = append(args, "-b", bp, "-F", k.backing)
	}
	if k.compress {
		src := filepath.Join(dir, "src.raw")
		if err := os.WriteFile(src, plCompressible(k.size), 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, dir, "qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", k.opts, src, img)
	} else {
		run(t, dir, "qemu-img", append(args, img, itoa(k.size))...)
	}
	if k.snapshot {
		qemuIO(t, img, fmt.Sprintf("write -P 0x5a 0 %d", k.size/2))
		run(t, dir, "qemu-img", "snapshot", "-c", "s", img)
	}
	return img
}

// plCompressible is data for a compressed image: an eighth of it
// compressible text (every state decompresses all of it: it is kept
// small), the rest unallocated.
func plCompressible(size int64) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(size), 3))
	for i := range b[:size/8] {
		b[i] = "abcdefgh"[r.IntN(8)]
	}
	return b
}

// patternByte is what guest operation op writes at guest offset pos: a
// sector says which operation wrote it and where, and compresses well.
func patternByte(op int, pos int64) byte {
	s, in := pos/sector, pos%sector
	switch {
	case in < 8:
		return byte(uint64(op) >> (8 * in))
	case in < 16:
		return byte(uint64(s) >> (8 * (in - 8)))
	}
	return byte(op*7) + byte(s)
}

// recordRun runs a seeded random workload on a fresh image of kind k
// through a recording faultdisk; prepare, if set, configures the disk
// first (a mutation).
func recordRun(t *testing.T, k plKind, seed uint64, prepare func(*faultdisk.Disk)) *plRun {
	t.Helper()
	dir := t.TempDir()
	img := k.createImage(t, dir)
	d, err := faultdisk.LoadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(d)
	}
	d.Record()
	g := fixture(t)
	if err := d.Install(g, "fault"); err != nil {
		t.Fatal(err)
	}
	n, err := g.Add(plOptions(img, true))
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	qimg := n.Image().(*image)
	pr := &plRun{kind: k, dir: dir, img: img, cs: qimg.clusterSize, seed: maphash.MakeSeed(),
		bases: map[int][]uint64{}, shadow: map[[2]int]*allowedSet{}}
	// Beyond the end, the disk reads zeroes once it has grown there.
	pr.initialData = append(readAll(t, n), make([]byte, (maxGrowth-1)*k.size)...)
	pr.initial = pr.hashSectors(pr.initialData)

	r := rand.New(rand.NewPCG(seed, 5))
	size, cs := k.size, pr.cs
	unflushedCompressed := false
	for len(pr.ops) < k.ops {
		i := len(pr.ops) + 1 // the guest operation's number, in its data
		var off, l int64
		switch r.IntN(3) {
		case 0: // whole clusters
			off = r.Int64N(size/cs) * cs
			l = min(size-off, cs*(1+r.Int64N(3)))
		case 1: // small, unaligned
			off = r.Int64N(size)
			l = min(size-off, 1+r.Int64N(cs+cs/2))
		default:
			off = r.Int64N(size/sector) * sector
			l = min(size-off, sector*(1+r.Int64N(24)))
		}
		l = min(l, 64<<10)
		op := guestOp{start: d.Seq()}
		var err error
		var p []byte
		switch x := r.IntN(20); {
		case r.IntN(40) == 0 && !k.noResize && size < maxGrowth*k.size:
			grown := min(maxGrowth*k.size, size+(1+r.Int64N(k.size/sector))*sector)
			op.name = fmt.Sprintf("grow %d to %d", size, grown)
			if err = n.Truncate(grown); err != nil {
				t.Fatalf("op %d %s: %v", i, op.name, err)
			}
			// Not a flush: writes whose L2 entries are still in memory
			// are no more durable for it. The new size may or may not be.
			size, off, l = grown, 0, 0
		case x < 3:
			op.name, op.flush = "flush", true
			if unflushedCompressed {
				err = qimg.Flush() // the node saw no write: it would skip it
			} else {
				err = n.Flush()
			}
			unflushedCompressed = false
		case x < 5 && k.compress:
			off &^= cs - 1
			l = cs
			if off+cs > size {
				off -= cs
			}
			p = make([]byte, l)
			for j := range p {
				p[j] = patternByte(i, off+int64(j))
			}
			op.name = fmt.Sprintf("compressed write %d+%d", off, l)
			if err = qimg.WriteCompressed(p, off); errors.Is(err, ErrCompressedTarget) {
				op.name = fmt.Sprintf("write %d+%d", off, l)
				_, err = n.WriteAt(p, off)
			} else {
				unflushedCompressed = true
			}
		case k.reuse && x < 9:
			off &^= cs - 1
			l = min(size-off, cs*(1+r.Int64N(4)))
			op.name = fmt.Sprintf("discard %d+%d", off, l)
			err = n.Discard(off, l)
		case k.allocRange && x < 9:
			if op.name, p, err = allocRangeOp(n, qimg, r, i, off, l); err == nil {
				unflushedCompressed = true // the node saw no write: its flush would be skipped
			}
		case x < 14:
			p = make([]byte, l)
			for j := range p {
				p[j] = patternByte(i, off+int64(j))
			}
			op.name = fmt.Sprintf("write %d+%d", off, l)
			_, err = n.WriteAt(p, off)
		case x < 17:
			unmap := x == 16
			op.name = fmt.Sprintf("write-zeroes %d+%d unmap=%v", off, l, unmap)
			err = n.WriteZeroes(off, l, unmap)
		default:
			op.name = fmt.Sprintf("discard %d+%d", off, l)
			err = n.Discard(off, l)
		}
		if err != nil {
			t.Fatalf("op %d %s: %v", i, op.name, err)
		}
		op.end, op.size = d.Seq(), size
		if !op.flush {
			// What the sectors read now is their new value: for a write,
			// the data (checked here); for zeroes and discards, whatever
			// the image says they read as.
			lo, hi := off/sector, (off+l+sector-1)/sector
			got := make([]byte, (hi-lo)*sector)
			if _, err := n.ReadAt(got, lo*sector); err != nil {
				t.Fatal(err)
			}
			if p != nil && !bytes.Equal(got[off-lo*sector:][:l], p) {
				t.Fatalf("op %d %s: reads back wrong", i, op.name)
			}
			op.firstSect, op.hashes, op.data = lo, pr.hashSectors(got), got
		}
		pr.ops = append(pr.ops, op)
	}
	// Closing writes everything back and marks the image clean: the last
	// flush.
	closeOp := guestOp{name: "close", flush: true, start: d.Seq(), size: size}
	g.Detach(b)
	if err := g.Delete(n.Name()); err != nil {
		t.Fatal(err)
	}
	closeOp.end = d.Seq()
	pr.ops = append(pr.ops, closeOp)
	pr.journal = d.Journal()
	return pr
}

func (pr *plRun) hashSectors(b []byte) []uint64 {
	h := make([]uint64, len(b)/sector)
	for i := range h {
		h[i] = maphash.Bytes(pr.seed, b[i*sector:(i+1)*sector])
	}
	return h
}
