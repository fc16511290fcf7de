package imgtool

import (
	"bytes"
	"io"
	"os"
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
// descriptor open: the parallel tests cannot check their own.
func TestMain(m *testing.M) { os.Exit(fdtest.Main(m)) }
