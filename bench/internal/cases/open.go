package cases

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/bench/internal/stats"
	"minivmm/block/qcow2"
	"minivmm/qemuopen"
)

// Open times, in process, open+close of /dev/fdset/0 through the qemuopen
// registry against its floor (F_DUPFD_CLOEXEC+close of one fd) and against
// open(2)+close of the file's path through the same registry.
func Open(e *harness.Env, s *report.Section) error {
	path := e.Path("open.img")
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		return err
	}
	r := qemuopen.New(qemuopen.Config{})
	defer r.CloseAll()
	set := int64(0)
	for _, mode := range []int{unix.O_RDONLY, unix.O_RDWR} {
		fd, err := unix.Open(path, mode|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if _, _, err := r.AddFd(fd, qemuopen.AddRequest{SetID: &set}); err != nil {
			unix.Close(fd)
			return err
		}
	}
	src, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(src)

	fdset := func() error {
		fd, err := r.Open("/dev/fdset/0", unix.O_RDWR)
		if err != nil {
			return err
		}
		return r.Close(fd)
	}
	dup := func() error {
		fd, err := unix.FcntlInt(uintptr(src), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return err
		}
		return unix.Close(fd)
	}
	plain := func() error {
		fd, err := r.Open(path, unix.O_RDWR)
		if err != nil {
			return err
		}
		return r.Close(fd)
	}
	target := 200 * time.Millisecond
	if e.Quick {
		target = 50 * time.Millisecond
	}
	ops := []func() error{fdset, dup, plain}
	ns := make([]int, len(ops))
	for i, op := range ops {
		if ns[i], err = harness.Calibrate(target, op); err != nil {
			return err
		}
	}
	var fs []func() (float64, error)
	for i, op := range ops {
		fs = append(fs, func() (float64, error) { return harness.PerOp(ns[i], op) })
	}
	out, err := harness.Interleave(e.Reps, fs...)
	if err != nil {
		return err
	}
	s.Text = fmt.Sprintf("Open+close of one file, in process, %d rounds of about %v per case "+
		"(the three interleaved). The fdset holds an O_RDONLY and an O_RDWR fd of the file; "+
		"the open asks for O_RDWR. QEMU has no comparable in-process entry point, so there is no QEMU column; "+
		"QMP blockdev-add below compares whole opens with QEMU.", e.Reps, target)
	s.Commands = []string{reportCmd(e, "open"), "go test -run=NONE -bench='QemuOpenFdset|DupBaseline|OpenPath' ./bench/"}
	t := s.Table("", "case", "time per open+close", "ratio to the dup floor (per round)")
	names := []string{"qemu_open(/dev/fdset/0, O_RDWR) + qemu_close", "F_DUPFD_CLOEXEC + close (floor)", "qemu_open(path) = open(2) + close"}
	groups := []string{"fdset open", "dup floor", "open(2) path"}
	for i := range ops {
		t.Add(names[i], dur(out[i]), ratio(stats.Ratios(out[i], out[1])))
		point(s, "latency", groups[i], "minivmm", out[i])
	}
	rt := stats.Ratios(out[0], out[1])
	s.Targets = append(s.Targets, report.CheckAtMost("fdset open within 1.3x of the dup floor", med(rt), 1.3, ratio(rt)))
	return nil
}

// Chain opens a qcow2 whose backing chain is 1, 10, 100 and 1000 images
// deep (depth = images in the chain): in process through the block layer
// (time, and heap held by the open chain), and as a whole `img map` of the
// top image, minivmm's and qemu-img's (wall time and peak RSS).
func Chain(e *harness.Env, s *report.Section) error {
	depths := []int{1, 10, 100, 1000}
	dir := e.Path("chain")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	// One chain of 1000: depth d opens image d-1 (its chain is d deep).
	imgs := make([]string, depths[len(depths)-1])
	for i := range imgs {
		imgs[i] = filepath.Join(dir, fmt.Sprintf("c%04d.qcow2", i))
		o := qcow2.CreateOptions{Size: 64 << 20}
		if i > 0 {
			o.BackingFile, o.BackingFormat = imgs[i-1], "qcow2"
		}
		if err := createQcow2(imgs[i], o); err != nil {
			return err
		}
	}
	s.Text = "One chain of 1000 empty 64 MiB qcow2 images (each backed by the previous one, backing format recorded); " +
		"depth d opens image d, whose chain is d images deep. In process: `block.Graph.Add` of the top image, read-only, " +
		"and the Go heap still held by the open chain (after a GC). As tools: `img map --output=json` of the top image, " +
		"which opens the whole chain, wall time and peak RSS of the process (GNU time's %M)."
	s.Commands = []string{reportCmd(e, "chain"),
		"minivmm img map --output=json cNNNN.qcow2", "qemu-img map --output=json cNNNN.qcow2"}
	t := s.Table("", "depth", "in-process open", "per image", "heap held", "minivmm img map", "qemu-img map", "qemu/minivmm (time)", "RSS minivmm", "RSS qemu-img")
	var xs, ys []float64
	perImage := map[int]float64{}
	var deepErr error
	for _, d := range depths {
		top := imgs[d-1]
		var times, heaps []float64
		for range e.Reps {
			sec, heap, err := openChain(top)
			if err != nil {
				if d == 1000 {
					deepErr = err
					break
				}
				return fmt.Errorf("depth %d: %v", d, err)
			}
			times, heaps = append(times, sec), append(heaps, heap)
		}
		if deepErr != nil {
			t.Add(strconv.Itoa(d), "fails: "+deepErr.Error())
			continue
		}
		mapArgs := []string{"map", "--output=json", top}
		timeBin := harness.GNUTime()
		tool := func(bin string, args ...string) (float64, float64, error) {
			if timeBin == "" {
				r, err := harness.Exec(bin, args...)
				return r.Wall.Seconds(), math.NaN(), err
			}
			r, rss, err := harness.PeakRSS(timeBin, e.Scratch, bin, args...)
			return r.Wall.Seconds(), float64(rss), err
		}
		toolReps := e.Reps
		skipQemu := e.Quick && d == 1000 // qemu-img takes 13-19 s here
		if e.Quick && d == 1000 {
			toolReps = 1
		}
		var mineT, qemuT, mineRSS, qemuRSS []float64
		qemuCell, qemuRSSCell, rcell := harness.NotInstalled("qemu-img"), harness.NotInstalled("qemu-img"), "–"
		var qemuErr error
		for range toolReps {
			sec, rss, err := tool(e.Minivmm, append([]string{"img"}, mapArgs...)...)
			if err != nil {
				return err
			}
			mineT, mineRSS = append(mineT, sec), append(mineRSS, rss)
			if e.QemuImg != "" && qemuErr == nil && !skipQemu {
				sec, rss, err := tool(e.QemuImg, mapArgs...)
				if err != nil {
					qemuErr = err
					continue
				}
				qemuT, qemuRSS = append(qemuT, sec), append(qemuRSS, rss)
			}
		}
		if skipQemu && e.QemuImg != "" {
			qemuCell, qemuRSSCell = "not run with -quick (over 10 s)", "–"
		} else if e.QemuImg != "" {
			if qemuErr != nil {
				qemuCell, qemuRSSCell = "fails: "+qemuErr.Error(), "–"
			} else {
				qemuCell, qemuRSSCell = dur(qemuT), stats.Summarize(qemuRSS).Format(stats.Bytes)
				rcell = ratio(stats.Ratios(qemuT, mineT))
				point(s, "chain-open", strconv.Itoa(d), "qemu-img map", qemuT)
			}
		}
		mineRSSCell := stats.Summarize(mineRSS).Format(stats.Bytes)
		if timeBin == "" {
			mineRSSCell = "needs GNU time (/usr/bin/time)"
			if e.QemuImg != "" && qemuErr == nil {
				qemuRSSCell = mineRSSCell
			}
		}
		m := med(times)
		perImage[d] = m / float64(d)
		xs, ys = append(xs, float64(d)), append(ys, m)
		t.Add(strconv.Itoa(d), dur(times), stats.Duration(m/float64(d)), stats.Summarize(heaps).Format(stats.Bytes),
			dur(mineT), qemuCell, rcell, mineRSSCell, qemuRSSCell)
		point(s, "chain-open", strconv.Itoa(d), "minivmm in-process open", times)
		point(s, "chain-open", strconv.Itoa(d), "minivmm img map", mineT)
	}
	s.Charts = []string{"chain-open.svg"}
	slope, icpt, r2 := stats.Slope(xs, ys)
	sign := "+"
	if icpt < 0 {
		sign, icpt = "−", -icpt
	}
	s.Note("Least-squares fit of in-process open time against depth: %s per image %s %s, r² = %.4f (1 = perfectly linear).",
		stats.Duration(slope), sign, stats.Duration(icpt), r2)
	goal := "chain open cost linear in depth; a 1000-deep chain opens"
	if deepErr != nil {
		s.Targets = append(s.Targets, report.Target{Goal: goal, Measured: "1000-deep chain: " + deepErr.Error(), Status: report.NotMet})
		return nil
	}
	// Linear: the cost per image at depth 1000 is not much above that at
	// 100 (quadratic growth would make it 10x).
	g := perImage[1000] / perImage[100]
	s.Targets = append(s.Targets, report.CheckAtMost(goal, g, 2,
		fmt.Sprintf("opens; per-image cost at 1000 = %s of that at 100; r² = %.3f", stats.Ratio(g), r2)))
	return nil
}

// openChain opens top in a fresh graph and returns the seconds it took
// and the heap the open chain holds.
func openChain(top string) (sec, heap float64, err error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g := newGraph()
	defer g.close()
	start := time.Now()
	n, err := g.open(imageOpts("qcow2", top, true), false)
	if err != nil {
		return 0, 0, err
	}
	sec = time.Since(start).Seconds()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(n)
	return sec, float64(after.HeapAlloc) - float64(before.HeapAlloc), nil
}
