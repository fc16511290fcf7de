package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// timingLine matches qemu-io's statistics line; normalize keeps its
// size and op count.
var timingLine = regexp.MustCompile(`(?m)^(\S+(?: \S+)?), (\d+) ops; (?:\d\d\.\d\d sec|\d+:\d\d:\d\d\.\d\d) \([0-9.]+(?:inf)? (?:bytes|KiB|MiB|GiB|TiB|PiB|EiB)/sec and [0-9.]+ ops/sec\)$`)

func normalize(s string) string { return timingLine.ReplaceAllString(s, "$1, $2 ops; TIME") }

// testImage makes a file of size bytes, starting with content.
func testImage(t *testing.T, size int64, content []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.raw")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path
}

// ioBinary runs the built minivmm binary's io subcommand with files as
// fds 3, 4, ...
func ioBinary(t *testing.T, files []*os.File, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"io"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &out, &errb, strings.NewReader(stdin)
	cmd.ExtraFiles = files
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

func openFiles(t *testing.T, path string, modes ...int) []*os.File {
	t.Helper()
	var files []*os.File
	for _, m := range modes {
		f, err := os.OpenFile(path, m, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		files = append(files, f)
	}
	return files
}

// TestIOAddFdInherited runs the binary as a management layer would,
// handing it the image only as inherited fds.
func TestIOAddFdInherited(t *testing.T) {
	t.Parallel()
	img := testImage(t, 1<<20, nil)

	files := openFiles(t, img, os.O_RDWR)
	out, errOut, code := ioBinary(t, files, "", "-f", "raw", "-add-fd", "fd=3,set=2", "-c", "write -P 0x3c 0 64k", "-c", "read -P 0x3c 0 64k", "/dev/fdset/2")
	if code != 0 || errOut != "" || !strings.Contains(out, "wrote 65536/65536 bytes at offset 0\n") {
		t.Fatalf("write through an fdset: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	data, _ := os.ReadFile(img)
	if !bytes.Equal(data[:65536], bytes.Repeat([]byte{0x3c}, 65536)) {
		t.Error("the image does not hold what was written through the fdset")
	}

	// Only an O_RDONLY fd: -r opens, and a write is refused.
	files = openFiles(t, img, os.O_RDONLY)
	out, errOut, code = ioBinary(t, files, "", "-r", "-f", "raw", "-add-fd", "fd=3,set=2", "-c", "read -P 0x3c 0 4k", "-c", "write 0 1", "/dev/fdset/2")
	if code != 1 || !strings.Contains(out, "read 4096/4096 bytes at offset 0\n") || errOut != "minivmm io: Block node is read-only\n" {
		t.Errorf("-r over an O_RDONLY fd: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// Without -r it needs O_RDWR, which the set does not have.
	out, errOut, code = ioBinary(t, files, "", "-f", "raw", "-add-fd", "fd=3,set=2", "-c", "read 0 1", "/dev/fdset/2")
	wantErr := "minivmm io: can't open device /dev/fdset/2: Failed to find file descriptor with matching flags=0x2 (fdset 2 has no fd with flags O_RDWR; it holds fd "
	if code != 1 || out != "" || !strings.HasPrefix(errOut, wantErr) || !strings.HasSuffix(errOut, " O_RDONLY)\n") {
		t.Errorf("O_RDONLY fd without -r: exit %d, stdout %q, stderr %q, want %q...", code, out, errOut, wantErr)
	}
	// A bad -add-fd is refused as the VMM refuses it.
	_, errOut, code = ioBinary(t, nil, "", "-add-fd", "fd=3,set=2", "/dev/fdset/2")
	if code != 1 || errOut != "minivmm io: -add-fd fd=3,set=2: fd is not valid or already in use\n" {
		t.Errorf("missing fd: exit %d, stderr %q", code, errOut)
	}
	// Commands from stdin, which is not a terminal: the prompt is still
	// printed, as qemu-io prints it.
	out, _, code = ioBinary(t, files, "read -P 0x3c 0 1\nread -P 0 0 1\n", "-r", "-f", "raw", "-add-fd", "fd=3,set=2", "/dev/fdset/2")
	if code != 1 || normalize(out) != "minivmm io> read 1/1 bytes at offset 0\n1 bytes, 1 ops; TIME\nminivmm io> Pattern verification failed at offset 0, 1 bytes\nread 1/1 bytes at offset 0\n1 bytes, 1 ops; TIME\nminivmm io> " {
		t.Errorf("stdin: exit %d, stdout %q", code, out)
	}
}
