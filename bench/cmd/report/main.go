// Command report runs minivmm's whole benchmark suite, side by side with
// QEMU where it is installed, and writes a Markdown report and SVG charts:
//
//	go run ./bench/cmd/report -o bench/results          # full, 5-10 minutes
//	go run ./bench/cmd/report -quick -o /tmp/report     # about a minute
//
// Every figure is a median over repeated runs with its spread (min–max);
// comparisons are ratios within one run, never absolute times. It exits 1
// when a case could not run (never because of a number), after writing
// the report with what did run.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	"minivmm/bench/internal/cases"
	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
)

func main() {
	out := flag.String("o", "bench/results", "directory for report.md and the SVG charts")
	quick := flag.Bool("quick", false, "smaller inputs and fewer rounds (about a minute on 2 cores)")
	run := flag.String("run", "", "run only the cases whose id matches this regexp (ids: "+ids()+")")
	reps := flag.Int("reps", 0, "rounds per measurement (default 5, or 3 with -quick)")
	flag.StringVar(&sourceNote, "source", "", "what source is measured, for the header, when it is not a git checkout (e.g. a `git archive` export)")
	flag.Parse()
	os.Exit(mainErr(*out, *quick, *run, *reps))
}

func ids() string {
	var s []string
	for _, c := range cases.All() {
		s = append(s, c.ID)
	}
	return strings.Join(s, ", ")
}

func mainErr(out string, quick bool, run string, reps int) int {
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "report: "+format+"\n", a...) }
	sel, err := regexp.Compile(run)
	if err != nil {
		logf("-run: %v", err)
		return 2
	}
	if reps <= 0 {
		reps = 5
		if quick {
			reps = 3
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		logf("%v", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "minivmm-report-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	cleanup := func() { os.RemoveAll(tmp) }
	defer cleanup()
	// An interrupt still kills the VMMs a case started and removes the
	// scratch images.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer func() { signal.Stop(sigs); close(sigs) }()
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		logf("%v: stopping VMMs, removing %s", s, tmp)
		harness.KillTracked()
		cleanup()
		os.Exit(1)
	}()

	start := time.Now()
	loadStart := loadavg()
	logf("building minivmm")
	bin, err := harness.Build(tmp)
	if err != nil {
		logf("%v", err)
		return 1
	}
	scratch := filepath.Join(tmp, "scratch")
	if err := os.Mkdir(scratch, 0o700); err != nil {
		logf("%v", err)
		return 1
	}
	env := &harness.Env{Quick: quick, Reps: reps, Minivmm: bin, Scratch: scratch, Log: logf}
	env.LookQemu()

	rep := &report.Report{Title: "minivmm performance report"}
	failed := 0
	maxLoad := loadStart
	for _, c := range cases.All() {
		if !sel.MatchString(c.ID) {
			continue
		}
		if l := loadavg(); l.one > maxLoad.one {
			maxLoad = l
		}
		s := &report.Section{ID: c.ID, Title: c.Title}
		t0 := time.Now()
		logf("%s ...", c.ID)
		if err := c.Run(env, s); err != nil {
			s.Err = err
			failed++
			logf("%s: could not run: %v", c.ID, err)
		} else {
			logf("%s: done in %v", c.ID, time.Since(t0).Round(time.Millisecond))
		}
		s.Note("This case took %v.", time.Since(t0).Round(time.Second/10))
		rep.Sections = append(rep.Sections, s)
		// Scratch images of a case are not needed by the next.
		clearDir(scratch)
	}
	loadEnd := loadavg()
	if loadEnd.one > maxLoad.one {
		maxLoad = loadEnd
	}
	rep.Header = header(env, quick, run, reps, start, loadStart, loadEnd, maxLoad)
	rep.Summary = "Each figure is the median over the rounds with the spread as (min–max); a ratio is taken within one round, " +
		"between measurements made back to back on the same input, and its median and spread are over the rounds. " +
		"Absolute times depend on this machine and its load; read the ratios. `minivmm` below is the binary built from this tree " +
		"(`go build ./cmd/minivmm`) or its packages called in process."
	charts, err := writeCharts(out, rep, env)
	if err != nil {
		logf("%v", err)
		return 1
	}
	f, err := os.Create(filepath.Join(out, "report.md"))
	if err != nil {
		logf("%v", err)
		return 1
	}
	if err := rep.WriteMarkdown(f); err != nil {
		f.Close()
		logf("%v", err)
		return 1
	}
	if err := f.Close(); err != nil {
		logf("%v", err)
		return 1
	}
	logf("wrote %s and %d charts in %v", filepath.Join(out, "report.md"), charts, time.Since(start).Round(time.Second))
	if failed > 0 {
		logf("%d case(s) could not run", failed)
		return 1
	}
	return 0
}

func clearDir(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

type load struct {
	one, five, fifteen float64
	text               string
}

// loadavg reads /proc/loadavg (as uptime prints it).
func loadavg() load {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return load{text: "unknown"}
	}
	var l load
	fmt.Sscanf(string(b), "%f %f %f", &l.one, &l.five, &l.fifteen)
	l.text = fmt.Sprintf("%.2f, %.2f, %.2f", l.one, l.five, l.fifteen)
	return l
}

func header(e *harness.Env, quick bool, run string, reps int, start time.Time, ls, le, lmax load) []string {
	mode := "full"
	cmd := "go run ./bench/cmd/report"
	if quick {
		mode = "quick (-quick: smaller inputs, fewer rounds)"
		cmd += " -quick"
	}
	if run != "" {
		cmd += " -run '" + run + "'"
	}
	cmd += " -o DIR"
	cpus := runtime.NumCPU()
	h := []string{
		fmt.Sprintf("Produced by `%s`, %s, in %v; %s mode, %d rounds per measurement.", cmd, start.UTC().Format("2006-01-02 15:04 UTC"),
			time.Since(start).Round(time.Second), mode, reps),
		fmt.Sprintf("Machine: %s, %d CPUs, %s; %s.", cpuModel(), cpus, kernel(), runtime.Version()),
		fmt.Sprintf("Source: %s.", treeState()),
		fmt.Sprintf("QEMU: %s; %s.", toolVersion(e.QemuImg, "qemu-img"), toolVersion(e.QemuSys, "qemu-system-x86_64")),
		fmt.Sprintf("Load average (1, 5, 15 min, as `uptime` shows it): %s at the start, %s at the end, highest 1-minute value seen before a case %.2f.",
			ls.text, le.text, lmax.one),
	}
	if lmax.one > float64(cpus)/2 {
		h = append(h, fmt.Sprintf("**The machine was loaded** (1-minute load up to %.2f on %d CPUs): other work (other engineers' tests) "+
			"competed with the benchmarks, so absolute figures are low and spreads wide; ratios within a round are less affected.", lmax.one, cpus))
	}
	return h
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func kernel() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return "Linux"
	}
	b := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return "Linux " + string(b)
}

func toolVersion(path, name string) string {
	if path == "" {
		return harness.NotInstalled(name)
	}
	r, err := harness.Exec(path, "--version")
	if err != nil {
		return name + " (version unknown)"
	}
	first, _, _ := strings.Cut(string(r.Out), "\n")
	return strings.TrimSpace(first)
}

// sourceNote is -source.
var sourceNote string

// treeState names the commit measured and any uncommitted changes to Go
// files outside bench/ (they are in the binary and packages measured).
func treeState() string {
	head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		if sourceNote != "" {
			return sourceNote
		}
		return "not a git checkout"
	}
	st := fmt.Sprintf("git commit %s", strings.TrimSpace(string(head)))
	out, err := exec.Command("git", "status", "--porcelain", "--", ".", ":(exclude)bench").Output()
	if err != nil {
		return st
	}
	var dirty []string
	for _, line := range strings.Split(string(out), "\n") {
		if len(line) > 3 && strings.HasSuffix(line, ".go") {
			dirty = append(dirty, strings.TrimSpace(line[3:]))
		}
	}
	if len(dirty) > 0 {
		st += fmt.Sprintf(", plus uncommitted changes to %s (the working tree was measured)", strings.Join(dirty, ", "))
	}
	return st
}
