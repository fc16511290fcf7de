package runtool

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
)

// self is the minivmm the runs start as their VMM.
var self string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "runtool-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	self = filepath.Join(dir, "minivmm")
	build := exec.Command("go", "build", "-o", self, "minivmm/cmd/minivmm")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building minivmm:", err)
		os.Exit(1)
	}
	code := fdtest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs the command in this process with hook as its BeforeReadBack,
// and returns its status and output.
func run(t *testing.T, hook func(string) error, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := Run(args, Config{Self: self, Stdout: &out, Stderr: &out, BeforeReadBack: hook})
	return code, out.String()
}

// breakImage is a BeforeReadBack hook that flips a byte in the first
// sector of a raw image that the guest wrote (stamped sectors are not
// zero; the images start zeroed), behind the VMM's back, so that the
// read-back must find it.
func breakImage(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	sec := make([]byte, 512)
	for off := int64(0); ; off += 512 {
		if _, err := f.ReadAt(sec, off); err != nil {
			return fmt.Errorf("no sector written in %s: %w", path, err)
		}
		if !bytes.Equal(sec, make([]byte, 512)) {
			sec[300] ^= 0x40
			_, err := f.WriteAt(sec, off)
			return err
		}
	}
}

// TestRunDefault runs the main job on its own images: a live snapshot,
// an intermediate and an active commit while the workload runs, the fds
// right after every step, verify clean after the pivot, images clean.
// The same run with its image broken before the read-back fails.
func TestRunDefault(t *testing.T) {
	fdtest.Check(t)
	code, out := run(t, nil, "--runtime", "1s")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{
		"fds: base.raw RO, overlay.qcow2 RW\n",
		"live snapshot: snapshot.qcow2 over overlay.qcow2",
		"fds: base.raw RO, overlay.qcow2 RO, snapshot.qcow2 RW\n",
		"commit overlay.qcow2 into base.raw (block-commit",
		"fds: base.raw RW, overlay.qcow2 RO, snapshot.qcow2 RW\n",
		"base.raw reopened read-only)\n          fds: base.raw RO, overlay.qcow2 RO, snapshot.qcow2 RW\n",
		"job commit-disk2: created running waiting pending concluded null; BLOCK_JOB_PENDING BLOCK_JOB_COMPLETED",
		"fds: base.raw RO, snapshot.qcow2 RW\n",
		"active commit snapshot.qcow2 into base.raw",
		"fds: base.raw RW, snapshot.qcow2 RW\n",
		"active commit READY",
		"pivot onto base.raw",
		"fds: base.raw RW, snapshot.qcow2 RW\n", // as QEMU: until blockdev-del
		"job commit-disk3: created running ready waiting pending concluded null; BLOCK_JOB_READY BLOCK_JOB_COMPLETED",
		"blockdev-del snapshot.qcow2",
		"remove-fd\n          fds: none on the images\n",
		"checks: workload ok, live snapshot and commits ok, read back ok, fds ok, VMM exit ok, images ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "FAILED") {
		t.Errorf("a check failed:\n%s", out)
	}
	checkReadBack(t, out, 64<<20)

	code, out = run(t, breakImage, "--runtime", "500ms")
	if code != 1 || !strings.Contains(out, "read back FAILED") || !regexp.MustCompile(`[1-9]\d* mismatches`).MatchString(out) {
		t.Errorf("a sector flipped after the pivot: exit %d:\n%s", code, out)
	}
}

// checkReadBack checks that the read-back read size bytes and checked some.
func checkReadBack(t *testing.T, out string, size int64) {
	t.Helper()
	_, after, ok := strings.Cut(out, "read back: ")
	m := regexp.MustCompile(`(\d+) requests in .*\n.*\n  verify: (\d+) sectors checked, (\d+) not known, 0 mismatches`).FindStringSubmatch(after)
	if !ok || m == nil {
		t.Fatalf("no clean read-back:\n%s", out)
	}
	var checked, unknown int64
	fmt.Sscan(m[2], &checked)
	fmt.Sscan(m[3], &unknown)
	if checked == 0 || (checked+unknown)*512 != size {
		t.Errorf("read back %d sectors checked and %d not known of %d bytes", checked, unknown, size)
	}
}

// TestRunUserImages: a user's image, raw or qcow2, gets a read-only
// verify pass that changes nothing (and checks the stamps a writing run
// left), a writing workload only with --write, a live snapshot and
// commit only with --commit (after which the image is where it was in
// its chain, holding what the guest wrote), and a broken image fails.
func TestRunUserImages(t *testing.T) {
	fdtest.Check(t)
	for _, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "user."+format)
			if out, err := exec.Command(self, "img", "create", "-q", "-f", format, path, "8M").CombinedOutput(); err != nil {
				t.Fatalf("img create: %v: %s", err, out)
			}
			file := "user." + format
			steps := []struct {
				args     []string
				code     int
				want     []string
				same     bool // the image is left as it was
				readBack bool
				stamped  bool // a read-only pass after a writing one
			}{
				{args: []string{"--runtime", "300ms"}, code: 0, same: true,
					want: []string{"fds: " + file + " RO\n", "checks: workload ok, fds ok, VMM exit ok, images ok"}},
				{args: []string{"--workload", "rw=randwrite"}, code: 1, same: true, want: []string{"give --write"}},
				{args: []string{"--commit"}, code: 1, same: true, want: []string{"give --write too"}},
				{args: []string{"--write", "--runtime", "500ms"}, code: 0, readBack: true,
					want: []string{"fds: " + file + " RW\n", "checks: workload ok, read back ok, fds ok, VMM exit ok, images ok"}},
				{args: []string{"--runtime", "300ms"}, code: 0, same: true, stamped: true,
					want: []string{"fds: " + file + " RO\n", "checks: workload ok, fds ok, VMM exit ok, images ok"}},
				{args: []string{"--write", "--commit", "--runtime", "1s"}, code: 0, readBack: true,
					want: []string{
						"live snapshot: snapshot0.qcow2 over " + file,
						"fds: " + file + " RO, snapshot0.qcow2 RW\n",
						"fds: " + file + " RW, snapshot0.qcow2 RW\n",
						"pivot onto " + file,
						"fds: " + file + " RW, snapshot0.qcow2 RW\n",
						"checks: workload ok, live snapshot and commits ok, read back ok, fds ok, VMM exit ok, images ok"}},
			}
			for _, s := range steps {
				before, _ := os.ReadFile(path)
				code, out := run(t, nil, append(s.args, path)...)
				if code != s.code {
					t.Errorf("%v: exit %d, want %d:\n%s", s.args, code, s.code, out)
				}
				for _, w := range s.want {
					if !strings.Contains(out, w) {
						t.Errorf("%v: output lacks %q:\n%s", s.args, w, out)
					}
				}
				if after, _ := os.ReadFile(path); s.same && !bytes.Equal(before, after) {
					t.Errorf("%v changed the image", s.args)
				}
				if s.readBack {
					checkReadBack(t, out, 8<<20)
				}
				if m := regexp.MustCompile(`verify: (\d+) sectors checked`).FindStringSubmatch(out); s.stamped && (m == nil || m[1] == "0") {
					t.Errorf("%v: the read-only pass checked nothing of a written image:\n%s", s.args, out)
				}
			}
			if out, err := exec.Command(self, "img", "info", path).CombinedOutput(); err != nil || strings.Contains(string(out), "backing file") {
				t.Errorf("the image's chain changed: %v\n%s", err, out)
			}
		})
	}
	path := filepath.Join(t.TempDir(), "user.raw")
	os.WriteFile(path, make([]byte, 4<<20), 0o600)
	if code, out := run(t, breakImage, "--write", "--runtime", "300ms", path); code != 1 || !strings.Contains(out, "read back FAILED") {
		t.Errorf("a sector flipped before the read-back: exit %d:\n%s", code, out)
	}
}
