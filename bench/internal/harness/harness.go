// Package harness is what the report's cases share: the environment (the
// minivmm binary built once, QEMU's tools if installed, scratch space,
// quick or full mode), timing loops, and running tools with their
// command lines recorded.
package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Env is the run's environment.
type Env struct {
	Quick     bool
	Reps      int    // repetitions of every measurement (medians over these)
	Minivmm   string // the minivmm binary, built once
	QemuImg   string // qemu-img's path, "" if not installed
	QemuSys   string // qemu-system-x86_64's path, "" if not installed
	Scratch   string // a directory for images, removed at the end
	Log       func(format string, a ...any)
	tempCount int
}

// NotInstalled is what a QEMU column says when the tool is missing.
func NotInstalled(tool string) string { return tool + " not installed" }

// Build compiles minivmm/cmd/minivmm into dir and returns its path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "minivmm")
	out, err := exec.Command("go", "build", "-o", bin, "minivmm/cmd/minivmm").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build minivmm/cmd/minivmm: %v\n%s", err, out)
	}
	return bin, nil
}

// LookQemu fills in the QEMU tools that are installed.
func (e *Env) LookQemu() {
	if p, err := exec.LookPath("qemu-img"); err == nil {
		e.QemuImg = p
	}
	if p, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		e.QemuSys = p
	}
}

// Path returns a new path in the scratch directory.
func (e *Env) Path(name string) string {
	e.tempCount++
	return filepath.Join(e.Scratch, fmt.Sprintf("%03d-%s", e.tempCount, name))
}

// Run is one finished tool run.
type Run struct {
	Out  []byte
	Wall time.Duration
}

// Exec runs name with args and fails unless it exits 0.
func Exec(name string, args ...string) (Run, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	r := Run{Out: out.Bytes(), Wall: time.Since(start)}
	if err != nil {
		return r, fmt.Errorf("%s: %v\n%s", CommandLine(name, args...), err, bytes.TrimSpace(out.Bytes()))
	}
	return r, nil
}

// GNUTime is GNU time's path, "" if it is not installed. The peak RSS of
// a tool comes from it: Go starts children with vfork, and Linux carries
// the parent's high-water mark into the child's ru_maxrss across exec, so
// wait4's figure is never below this process's own peak. GNU time forks,
// so its child starts from GNU time's small footprint.
func GNUTime() string {
	p, err := exec.LookPath("/usr/bin/time")
	if err != nil {
		return ""
	}
	return p
}

// PeakRSS runs name with args under GNU time and returns its peak
// resident size in bytes (time's %M) with its wall time.
func PeakRSS(timeBin, scratch, name string, args ...string) (Run, int64, error) {
	f, err := os.CreateTemp(scratch, "rss")
	if err != nil {
		return Run{}, 0, err
	}
	f.Close()
	defer os.Remove(f.Name())
	r, err := Exec(timeBin, append([]string{"-f", "%M", "-o", f.Name(), name}, args...)...)
	if err != nil {
		return r, 0, err
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return r, 0, err
	}
	kb, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return r, 0, fmt.Errorf("GNU time: unexpected output %q", b)
	}
	return r, kb << 10, nil
}

// CommandLine is name and args as a shell would take them, with the
// binary's basename and scratch paths shortened to their last element.
func CommandLine(name string, args ...string) string {
	parts := []string{filepath.Base(name)}
	if parts[0] == "minivmm" {
		parts[0] = "minivmm"
	}
	for _, a := range args {
		if strings.HasPrefix(a, os.TempDir()) {
			a = filepath.Base(a)
		}
		if a == "" || strings.ContainsAny(a, " '\"$\\{}*?;&|<>()") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// Calibrate finds how many calls of op take about d (at least 1), for
// loops timed with [TimeN].
func Calibrate(d time.Duration, op func() error) (int, error) {
	n := 1
	for {
		el, err := TimeN(n, op)
		if err != nil {
			return 0, err
		}
		if el >= d/4 || n >= 1<<30 {
			per := float64(el) / float64(n)
			if per <= 0 {
				return n, nil
			}
			return max(1, int(float64(d)/per)), nil
		}
		n *= 4
	}
}

// TimeN calls op n times and returns the elapsed time.
func TimeN(n int, op func() error) (time.Duration, error) {
	start := time.Now()
	for range n {
		if err := op(); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// PerOp times n calls of op and returns seconds per call.
func PerOp(n int, op func() error) (float64, error) {
	d, err := TimeN(n, op)
	if err != nil {
		return 0, err
	}
	return d.Seconds() / float64(n), nil
}

// Interleave runs the measurements fs reps times, each round calling
// every f once in turn (the order rotating between rounds, so that none
// always runs first), and returns the values: out[i][rep] is fs[i]'s.
// Ratios within one round compare measurements taken back to back.
func Interleave(reps int, fs ...func() (float64, error)) ([][]float64, error) {
	out := make([][]float64, len(fs))
	for rep := range reps {
		for k := range fs {
			i := (k + rep) % len(fs)
			v, err := fs[i]()
			if err != nil {
				return nil, err
			}
			out[i] = append(out[i], v)
		}
	}
	// Rotating the order appends out of round order; that is fine for
	// medians, and each out[i] has exactly reps values in round order
	// because every round visits every i once.
	return out, nil
}

// live are the long-running processes (VMMs) a case has started, so that
// an interrupted report can kill them rather than leave them behind.
var live = struct {
	sync.Mutex
	pids map[int]bool
}{pids: map[int]bool{}}

// Track records a started process until Untrack.
func Track(pid int) {
	live.Lock()
	defer live.Unlock()
	live.pids[pid] = true
}

// Untrack forgets a process (it has been killed or has exited).
func Untrack(pid int) {
	live.Lock()
	defer live.Unlock()
	delete(live.pids, pid)
}

// KillTracked sends SIGKILL to every tracked process.
func KillTracked() {
	live.Lock()
	defer live.Unlock()
	for pid := range live.pids {
		syscall.Kill(pid, syscall.SIGKILL)
		delete(live.pids, pid)
	}
}
