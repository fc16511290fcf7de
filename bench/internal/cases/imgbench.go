package cases

import (
	"fmt"
	"strconv"

	"minivmm/bench/internal/benchout"
	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/bench/internal/stats"
)

// imgBenchPair runs `minivmm img bench` and `qemu-img bench` with args
// (without the subcommand) reps times, alternating which goes first, and
// returns each one's requests/s and the per-round ratio minivmm/qemu.
// Without qemu-img, qemu and ratio are nil.
//
// mineCount, when not 0, replaces the -c count in minivmm's arguments (it
// must be args[1]): minivmm is many times faster, and both tools print
// their time with three decimals, so minivmm needs more requests to time
// them as precisely.
func imgBenchPair(e *harness.Env, reps int, args []string, mineCount int, prepare func() error) (mine, qemu, ratios []float64, err error) {
	runOne := func(bin string, pre ...string) (float64, error) {
		args := args
		if mineCount != 0 && len(pre) > 0 {
			if args[0] != "-c" {
				return 0, fmt.Errorf("imgBenchPair: -c must come first in %q", args)
			}
			args = append([]string{"-c", strconv.Itoa(mineCount)}, args[2:]...)
		}
		if prepare != nil {
			if err := prepare(); err != nil {
				return 0, err
			}
		}
		r, err := harness.Exec(bin, append(append(pre, "bench"), args...)...)
		if err != nil {
			return 0, err
		}
		b, err := benchout.ParseImgBench(r.Out)
		if err != nil {
			return 0, fmt.Errorf("%s: %v", harness.CommandLine(bin, append(append(pre, "bench"), args...)...), err)
		}
		return b.IOPS(), nil
	}
	fs := []func() (float64, error){func() (float64, error) { return runOne(e.Minivmm, "img") }}
	if e.QemuImg != "" {
		fs = append(fs, func() (float64, error) { return runOne(e.QemuImg) })
	}
	out, err := harness.Interleave(reps, fs...)
	if err != nil {
		return nil, nil, nil, err
	}
	mine = out[0]
	if e.QemuImg != "" {
		qemu = out[1]
		ratios = stats.Ratios(mine, qemu)
	}
	return mine, qemu, ratios, nil
}

// ImgBench runs `minivmm img bench` and `qemu-img bench` with the same
// arguments on the same images: raw and qcow2, 4 KiB and 64 KiB requests,
// depth 1, 8 and 64, reads then writes.
func ImgBench(e *harness.Env, s *report.Section) error {
	// qemu-img's counts; minivmm's are mineX times these.
	size := int64(256 << 20)
	counts := map[int]int{4096: 25000, 65536: 5000}
	const mineX = 4
	if e.Quick {
		size = 64 << 20
		counts = map[int]int{4096: 5000, 65536: 1000}
	}
	raw, qc := e.Path("bench.raw"), e.Path("bench.qcow2")
	if err := writePattern(raw, size); err != nil {
		return err
	}
	if err := toQcow2(e, raw, qc); err != nil {
		return err
	}
	images := map[string]string{"raw": raw, "qcow2": qc}
	s.Text = fmt.Sprintf("The same arguments to both tools, on the same images: a %d MiB raw file filled with data, and a qcow2 "+
		"converted from it (every cluster allocated, 64 KiB clusters). Sequential requests (qemu-img bench's only pattern), "+
		"default cache mode (writeback) for both; writes use --pattern=165 and overwrite allocated clusters. "+
		"req/s from each tool's own \"Run completed in X seconds.\" line (both print three decimals, so minivmm, "+
		"the faster, runs %d times as many requests, wrapping around the image, to be timed as precisely); %d rounds per case, the tools alternating; "+
		"the ratio is minivmm/qemu-img req/s within a round (above 1: minivmm is faster).", size>>20, mineX, e.Reps)
	s.Commands = []string{reportCmd(e, "img-bench"),
		fmt.Sprintf("minivmm img bench -c %d -d DEPTH -f FORMAT -s 4096 [-w --pattern=165] IMAGE", mineX*counts[4096]),
		fmt.Sprintf("qemu-img bench -c %d -d DEPTH -f FORMAT -s 4096 [-w --pattern=165] IMAGE", counts[4096]),
		fmt.Sprintf("(64 KiB: -s 65536, -c %d for minivmm and %d for qemu-img)", mineX*counts[65536], counts[65536])}
	t := s.Table("", "op", "format", "size", "depth", "minivmm req/s", "qemu-img req/s", "minivmm/qemu-img")
	for _, format := range []string{"raw", "qcow2"} {
		for _, bs := range []int{4096, 65536} {
			s.Charts = append(s.Charts, fmt.Sprintf("iops-%s-%dk.svg", format, bs>>10))
		}
	}
	for _, write := range []bool{false, true} {
		op := map[bool]string{false: "read", true: "write"}[write]
		for _, format := range []string{"raw", "qcow2"} {
			for _, bs := range []int{4096, 65536} {
				for _, depth := range []int{1, 8, 64} {
					args := []string{"-c", strconv.Itoa(counts[bs]), "-d", strconv.Itoa(depth), "-f", format, "-s", strconv.Itoa(bs)}
					if write {
						args = append(args, "-w", "--pattern=165")
					}
					args = append(args, images[format])
					mine, qemu, rs, err := imgBenchPair(e, e.Reps, args, mineX*counts[bs], nil)
					if err != nil {
						return err
					}
					chart := fmt.Sprintf("iops-%s-%dk", format, bs>>10)
					group := fmt.Sprintf("%s d=%d", op, depth)
					point(s, chart, group, "minivmm img bench", mine)
					q, r := harness.NotInstalled("qemu-img"), "–"
					if e.QemuImg != "" {
						q, r = num(qemu), ratio(rs)
						point(s, chart, group, "qemu-img bench", qemu)
					}
					t.Add(op, format, stats.Bytes(float64(bs)), strconv.Itoa(depth), num(mine), q, r)
					if bs == 4096 && (depth == 1 || depth == 64) {
						want := map[int]float64{1: 5, 64: 2}[depth]
						tg := report.Check(fmt.Sprintf("img bench %s %s 4 KiB depth %d: at least %gx qemu-img bench", format, op, depth, want),
							med(rs), want, ratio(rs))
						if e.QemuImg == "" {
							tg.Measured = harness.NotInstalled("qemu-img")
						}
						if tg.Status == report.NotMet {
							tg.Note = fmt.Sprintf("profile the in-process path: go test -run=NONE -bench='Layers/%s/%s-file/depth=1$' -cpuprofile=cpu.prof ./bench/", op, format)
						}
						s.Targets = append(s.Targets, tg)
					}
				}
			}
		}
	}
	return nil
}

// toolTable is a table of `img bench` against `qemu-img bench` req/s.
func toolTable(s *report.Section, title string) *report.Table {
	return s.Table(title, "minivmm img bench", "qemu-img bench", "minivmm/qemu-img")
}

// addToolRow adds one imgBenchPair result to a toolTable; the QEMU
// columns say so when qemu-img is not installed.
func addToolRow(e *harness.Env, t *report.Table, mine, qemu, ratios []float64) {
	q, r := harness.NotInstalled("qemu-img"), "–"
	if e.QemuImg != "" {
		q, r = num(qemu), ratio(ratios)
	}
	t.Add(num(mine), q, r)
}
