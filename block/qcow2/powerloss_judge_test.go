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
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"minivmm/block"
	"minivmm/block/faultdisk"
	"minivmm/qemuopen"
)

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

// sweepCrashStates judges the state at every crash point of j: each
// prefix of the writes in flight there, and up to four random subsets
// (torn writes too). It stops at the first failure, naming the point and
// the state, and says how many states and points it judged.
func sweepCrashStates(j *faultdisk.Journal, r *rand.Rand, judge func(st []byte) error) (states, points int, fail error) {
	j.CrashPoints(func(cp *faultdisk.CrashPoint) bool {
		points++
		try := func(pieces []faultdisk.Piece, desc string) {
			states++
			if err := judge(cp.State(nil, pieces)); err != nil && fail == nil {
				fail = fmt.Errorf("crash point %d, %s: %w", points, desc, err)
			}
		}
		for k := 0; k <= len(cp.Pending); k++ {
			try(faultdisk.Prefix(cp.Pending, k), fmt.Sprintf("prefix %d", k))
		}
		for i := 0; i < 4 && len(cp.Pending) > 1; i++ {
			try(faultdisk.Random(r, cp.Pending, 0.5, 0.3), "random")
		}
		return fail == nil
	})
	return states, points, fail
}
