package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
)

// binary is the minivmm built for this test run; the integration tests
// start it as a management layer would.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "minivmm-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "minivmm")
	build := exec.Command("go", "build", "-race", "-o", binary, ".")
	if !raceEnabled {
		build = exec.Command("go", "build", "-o", binary, ".")
	}
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building minivmm:", err)
		os.Exit(1)
	}
	// Every minivmm the tests start (built with -race under -race) would
	// sleep a second at exit for the race detector's sake.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	// The tests run in parallel, so fds are checked once they have all
	// ended (and in each minivmm child, by the tests that count them).
	code := fdtest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// startVMM runs minivmm with -qmp on a fresh socket (as qmptest.Start does
// for QEMU), files as fds 3, 4, ..., and args.
func startVMM(t *testing.T, files []*os.File, args ...string) *qmptest.Process {
	t.Helper()
	return qmptest.Start(t, binary, files, args...)
}
