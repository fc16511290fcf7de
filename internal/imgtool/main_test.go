package imgtool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
	"minivmm/internal/iotool"
	"minivmm/internal/qtool"
)

// runImg runs minivmm img in-process, named as qemu-img so that its
// messages compare with the real one's.
func runImg(args []string, stdout, stderr io.Writer) int {
	return Run(qtool.Program{Name: "qemu-img", Version: "test"}, args, stdout, stderr)
}

// ioRun runs minivmm io in-process, named as qemu-io.
func ioRun(args []string, stdin string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = iotool.Run(qtool.Program{Name: "qemu-io", Version: "test"}, args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

// rawFd opens path without O_CLOEXEC, as a management layer passes it.
func rawFd(t *testing.T, path string, flags int) int {
	t.Helper()
	fd, err := unix.Open(path, flags, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// tryHelp is qemu-img's pointer to its help, as the in-process tool (run
// as qemu-img) prints it.
const tryHelp = "Try 'qemu-img --help' for more information\n"

// TestMain checks, once every test has ended, that none left a
// descriptor open: the parallel tests cannot check their own. Run with
// childEnv set, the test binary is minivmm img instead (see imgIn).
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(fdtest.Main(m))
}

// childEnv makes the test binary run minivmm img (as qemu-img) on its
// arguments, for tests that need it in a directory of its own: a test
// cannot change the process's directory while others run in parallel.
const childEnv = "MINIVMM_IMGTOOL_TEST_CHILD"

// runChild runs the tool, failing the run (exit 99) when it leaves a
// descriptor open: the per-run fd check, made in the child.
func runChild() int {
	before := fdtest.Open()
	code := Run(qtool.Program{Name: "qemu-img", Version: "test"}, os.Args[1:], os.Stdout, os.Stderr)
	if diff := fdtest.Diff(before, fdtest.Open()); diff != "" {
		fmt.Fprintf(os.Stderr, "fd leak check: %s\n", diff)
		return 99
	}
	return code
}

// imgIn runs minivmm img (as qemu-img) in dir, in a child process.
func imgIn(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = dir
	// Without the race detector's one-second sleep at exit, which would
	// be most of each run.
	cmd.Env = append(os.Environ(), childEnv+"=1", "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code == 99 {
		t.Fatalf("minivmm img %q: %s", args, errb.String())
	}
	return out.String(), errb.String(), code
}
