package qcow2

// The power-loss harness: a qcow2 image is written through a faultdisk
// that records every change the driver makes to its file (the journal);
// afterwards, at every flush of the run, crash states are made from it
// — the durable image plus prefixes, random subsets and reorderings of
// the changes in flight, writes torn at sectors — and each is judged:
// it must open, read back everything the guest wrote before its last
// completed flush (and, of what it wrote since, old or new data only), and
// check clean (leaks allowed) with minivmm's check. A sample goes to QEMU
// too: qemu-img convert must read the same, and qemu-img check find no
// corruption.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"minivmm/block"
	"minivmm/block/faultdisk"
	"minivmm/qemuopen"
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

// allowedSet is what each sector may read after a power loss at one
// moment: the value it had when the last completed flush completed, or
// any value written since. A sector that several writes since touched
// in part may also mix them: each byte must then be one of its allowed
// values, since each write reaches the disk or not on its own.
type allowedSet struct {
	pr    *plRun
	last  int             // the last completed flush (index in pr.ops), -1: none
	base  []uint64        // per sector: the value at the last completed flush
	sizes []int64         // the disk's sizes: at the last completed flush, and since
	extra map[int64][]int // sectors written since: the operations (indexes in pr.ops)
	after string          // the last completed flush, for messages
}

func (a *allowedSet) ok(s int64, h uint64, got []byte) bool {
	if a.base[s] == h {
		return true
	}
	ops := a.extra[s]
	for _, i := range ops {
		if a.pr.ops[i].hash(s) == h {
			return true
		}
	}
	if len(ops) < 2 {
		return false
	}
	base := a.pr.sectorAfter(s, a.last)
	for b := range got {
		ok := got[b] == base[b]
		for _, i := range ops {
			ok = ok || got[b] == a.pr.ops[i].sector(s)[b]
		}
		if !ok {
			return false
		}
	}
	return true
}

func (op *guestOp) hash(s int64) uint64 { return op.hashes[s-op.firstSect] }

func (op *guestOp) sector(s int64) []byte {
	i := (s - op.firstSect) * sector
	return op.data[i : i+sector]
}

func (op *guestOp) covers(s int64) bool {
	return !op.flush && s >= op.firstSect && s < op.firstSect+int64(len(op.hashes))
}

// sectorAfter is what sector s read after guest operation last (-1:
// before the run).
func (pr *plRun) sectorAfter(s int64, last int) []byte {
	for i := last; i >= 0; i-- {
		if pr.ops[i].covers(s) {
			return pr.ops[i].sector(s)
		}
	}
	return pr.initialData[s*sector : (s+1)*sector]
}

// at is the allowed set for a power loss at crash point j: when the disk
// had taken its operations numbered below j. A guest operation counts as
// completed if all its disk operations are below j, and as possibly seen
// if it started by j.
func (pr *plRun) at(j int64) *allowedSet {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	last, started := -1, -1
	for i, op := range pr.ops {
		if op.flush && op.end <= j {
			last = i
		}
		if op.start <= j {
			started = i
		}
	}
	if a := pr.shadow[[2]int{last, started}]; a != nil {
		return a
	}
	base := pr.bases[last]
	if base == nil {
		base = append([]uint64(nil), pr.initial...)
		for _, op := range pr.ops[:last+1] {
			copy(base[op.firstSect:], op.hashes)
		}
		pr.bases[last] = base
	}
	a := &allowedSet{pr: pr, last: last, base: base, extra: map[int64][]int{}, after: "none (the image as it was)",
		sizes: []int64{pr.kind.size}}
	if last >= 0 {
		a.after = fmt.Sprintf("op %d (%s)", last+1, pr.ops[last].name)
		a.sizes[0] = pr.ops[last].size
	}
	for i := last + 1; i <= started; i++ {
		op := &pr.ops[i]
		a.sizes = append(a.sizes, op.size)
		for k := range op.hashes {
			s := op.firstSect + int64(k)
			a.extra[s] = append(a.extra[s], i)
		}
	}
	pr.shadow[[2]int{last, started}] = a
	return a
}

// plState is one crash state to judge.
type plState struct {
	img    []byte
	j1, j2 int64  // the earliest and the strictest crash point it can come from
	desc   string // how it was made
	detail string // the changes in flight and the guest operations around
}

// plStats counts what a harness run did.
type plStats struct {
	states, points, qemuChecked, dirty atomic.Int64
}

// plJudge judges crash states on several goroutines; the first violation
// stops it.
type plJudge struct {
	pr        *plRun
	stats     *plStats
	qemuEvery int64 // every this many states also go to QEMU (0: none)

	mu   sync.Mutex
	fail error
	seen map[[3]uint64]bool
	stop atomic.Bool
	bufs sync.Pool // *[]byte: crash states' buffers, reused
}

// judgeRun makes crash states at every crash point of pr's journal and
// judges them: all prefixes of the changes in flight, and random subsets
// of them in random orders, writes torn. It returns the first violation.
func (pr *plRun) judgeRun(randomPerPoint int, qemuEvery int64, stats *plStats) error {
	j := &plJudge{pr: pr, stats: stats, qemuEvery: qemuEvery, seen: map[[3]uint64]bool{}}
	states := make(chan plState, 4)
	var wg sync.WaitGroup
	workers := max(2, runtime.GOMAXPROCS(0))
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tmp := filepath.Join(pr.dir, fmt.Sprintf("state%d.qcow2", w))
			var readBuf []byte
			for st := range states {
				if j.stop.Load() {
					continue
				}
				n := stats.states.Add(1)
				err := pr.judgeState(st, j.qemuEvery > 0 && n%j.qemuEvery == 0, tmp, &readBuf, stats)
				j.bufs.Put(&st.img)
				if err != nil {
					j.mu.Lock()
					if j.fail == nil {
						j.fail = fmt.Errorf("%s: %w\n%s", st.desc, err, st.detail)
					}
					j.mu.Unlock()
					j.stop.Store(true)
				}
			}
		}()
	}
	r := rand.New(rand.NewPCG(uint64(len(pr.ops)), 77))
	point := 0
	pr.journal.CrashPoints(func(cp *faultdisk.CrashPoint) bool {
		point++
		stats.points.Add(1)
		// The strictest moment: just after the last guest flush that
		// completed before this point's flush would have.
		lastFlush := int64(0)
		for _, op := range pr.ops {
			if op.flush && op.end <= cp.Seq {
				lastFlush = op.end
			}
		}
		detail := pr.explain(cp)
		send := func(pieces []faultdisk.Piece, desc string) {
			var buf []byte
			if b, _ := j.bufs.Get().(*[]byte); b != nil {
				buf = *b
			}
			img := cp.State(buf, pieces)
			a := cp.Earliest(pieces)
			key := [3]uint64{maphash.Bytes(pr.seed, img), uint64(a), uint64(max(a, lastFlush))}
			if j.seen[key] {
				j.bufs.Put(&img)
				return
			}
			j.seen[key] = true
			states <- plState{img: img, j1: a, j2: max(a, lastFlush), detail: detail,
				desc: fmt.Sprintf("crash point %d (disk op %d, %d changes in flight), %s", point, cp.Seq, len(cp.Pending), desc)}
		}
		for n := 0; n <= len(cp.Pending) && !j.stop.Load(); n++ {
			send(faultdisk.Prefix(cp.Pending, n), fmt.Sprintf("prefix %d", n))
		}
		for i := 0; i < randomPerPoint && len(cp.Pending) > 1 && !j.stop.Load(); i++ {
			pieces := faultdisk.Random(r, cp.Pending, []float64{0.5, 0.2, 0.8}[i%3], 0.3)
			send(pieces, fmt.Sprintf("random %v", describePieces(cp.Pending, pieces)))
		}
		return !j.stop.Load()
	})
	close(states)
	wg.Wait()
	return j.fail
}

// explain lists a crash point's changes in flight, with the guest
// operations that made them, for a failure's message.
func (pr *plRun) explain(cp *faultdisk.CrashPoint) string {
	var b bytes.Buffer
	first := int64(-1)
	if len(cp.Pending) > 0 {
		first = cp.Pending[0].Seq
	}
	for i, op := range pr.ops {
		switch {
		case op.end <= first || op.start > cp.Seq:
		case op.end == op.start:
			fmt.Fprintf(&b, "  guest op %d: %s (no disk op, before disk op %d)\n", i+1, op.name, op.start)
		default:
			fmt.Fprintf(&b, "  guest op %d: %s (disk ops %d-%d)\n", i+1, op.name, op.start, op.end-1)
		}
	}
	for i, c := range cp.Pending {
		fmt.Fprintf(&b, "  change %d: disk op %d %v %d+%d\n", i, c.Seq, c.Kind, c.Off, c.Len)
	}
	return b.String()
}

func describePieces(pending []faultdisk.Change, pieces []faultdisk.Piece) string {
	var b bytes.Buffer
	for i, p := range pieces {
		if i == 16 {
			fmt.Fprintf(&b, "and %d more ", len(pieces)-i)
			break
		}
		c := pending[p.I]
		if p.Off != c.Off || p.End != c.Off+c.Len {
			fmt.Fprintf(&b, "%d[%d:%d] ", p.I, p.Off, p.End)
		} else {
			fmt.Fprintf(&b, "%d ", p.I)
		}
	}
	return "keeps " + b.String()
}

// judgeState opens a crash state and finds what is wrong with it: it
// must open, read back what the shadow allows at both its crash points,
// come out of minivmm's recovery (a dirty image's repair) clean by
// minivmm's check, and by qemu-img check when qemu is set.
func (pr *plRun) judgeState(st plState, qemu bool, tmp string, readBuf *[]byte, stats *plStats) error {
	d := faultdisk.Own(st.img)
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	g := block.NewGraph(reg)
	defer g.Close()
	if err := d.Install(g, "fault"); err != nil {
		return err
	}
	n, err := g.Add(plOptions(pr.img, false))
	if err != nil {
		return fmt.Errorf("does not open: %w", err)
	}
	if int64(cap(*readBuf)) < n.Length() {
		*readBuf = make([]byte, n.Length())
	}
	got := (*readBuf)[:n.Length()]
	if _, err := n.ReadAt(got, 0); err != nil {
		return fmt.Errorf("does not read: %w", err)
	}
	if err := pr.checkData(got, st); err != nil {
		return err
	}
	if qemu {
		// QEMU must read the same: the state as it is, before any repair.
		stats.qemuChecked.Add(1)
		if err := os.WriteFile(tmp, d.Bytes(), 0o600); err != nil {
			return err
		}
		raw := tmp + ".raw"
		if out, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", tmp, raw).CombinedOutput(); err != nil {
			return fmt.Errorf("qemu-img convert: %v\n%s", err, out)
		}
		qgot, err := os.ReadFile(raw)
		if err != nil {
			return err
		}
		if err := pr.checkData(qgot, st); err != nil {
			return fmt.Errorf("as QEMU reads it: %w", err)
		}
	}
	dirty := n.Image().(*image).DirtyFlag()
	if err := g.Delete(n.Name()); err != nil {
		return err
	}
	if dirty {
		stats.dirty.Add(1)
		if err := repairInMemory(g); err != nil {
			return fmt.Errorf("left dirty, and the repair failed: %w", err)
		}
	}
	file, err := g.Add(block.Options{"driver": "fault", "read-only": true})
	if err != nil {
		return err
	}
	res, err := Check(file, io.Discard)
	if err != nil {
		return fmt.Errorf("check failed: %w", err)
	}
	if res.Corruptions > 0 || res.CheckErrors > 0 {
		var log bytes.Buffer
		Check(file, &log)
		lines := bytes.SplitAfter(log.Bytes(), []byte("\n"))
		if len(lines) > 8 {
			lines = append(lines[:8], []byte("...\n"))
		}
		return fmt.Errorf("check finds %d corruptions, %d errors:\n%s", res.Corruptions, res.CheckErrors, bytes.Join(lines, nil))
	}
	if !qemu {
		return nil
	}
	if err := os.WriteFile(tmp, d.Bytes(), 0o600); err != nil {
		return err
	}
	out, err := exec.Command("qemu-img", "check", "-f", "qcow2", tmp).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 3) { // 3: leaks only
		return fmt.Errorf("qemu-img check: %v\n%s", err, out)
	}
	return nil
}

// checkData finds a sector of got (the virtual disk of st) that the
// shadow model allows at neither of st's crash points.
func (pr *plRun) checkData(got []byte, st plState) error {
	hashes := pr.hashSectors(got)
	for _, j := range []int64{st.j1, st.j2} {
		a := pr.at(j)
		if !slices.Contains(a.sizes, int64(len(got))) {
			return fmt.Errorf("the disk is %d bytes, not one of %v (crash at disk op %d)", len(got), a.sizes, j)
		}
		for s, h := range hashes {
			if !a.ok(int64(s), h, got[s*sector:(s+1)*sector]) {
				return fmt.Errorf("sector %d (offset %d) reads %s: neither what the last completed flush, %s, left nor anything written since (crash at disk op %d)",
					s, int64(s)*sector, pr.describeSector(got[s*sector:(s+1)*sector]), a.after, j)
			}
		}
	}
	return nil
}

// repairInMemory opens the fault disk of g read-write and writes its first
// sector as it is: the first write repairs a dirty image, the close marks
// it clean (what minivmm does with an image a crash left dirty).
func repairInMemory(g *block.Graph) error {
	n, err := g.Add(block.Options{"driver": "qcow2", "read-only": false, "file": block.Options{"driver": "fault"}})
	if err != nil {
		return err
	}
	defer g.Delete(n.Name())
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		return err
	}
	sec := make([]byte, sector)
	if _, err := n.ReadAt(sec, 0); err != nil {
		g.Detach(b)
		return err
	}
	if _, err := n.WriteAt(sec, 0); err != nil {
		g.Detach(b)
		return err
	}
	g.Detach(b)
	if n.Image().(*image).DirtyFlag() {
		return errors.New("still dirty after a read-write open and close")
	}
	return nil
}

// describeSector says which guest operation wrote a sector, if one did.
func (pr *plRun) describeSector(b []byte) string {
	op := binary.LittleEndian.Uint64(b)
	if op >= 1 && op <= uint64(len(pr.ops)) && b[16] == byte(int(op)*7)+byte(binary.LittleEndian.Uint64(b[8:])) {
		return fmt.Sprintf("the data of op %d (%s)", op, pr.ops[op-1].name)
	}
	if allZero(b) {
		return "zeroes"
	}
	return fmt.Sprintf("%x...", b[:16])
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
