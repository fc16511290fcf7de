package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestRunCommand runs `minivmm run` on its defaults, as a process: it
// makes a qcow2 over a raw base, runs a verifying workload through a
// second minivmm confined to fdsets, snapshots and commits live under
// it, and exits 0 with every check held; qemu-img finds the images it
// wrote clean. (internal/runtool's tests cover user images and failures.)
func TestRunCommand(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(binary, "run", "--runtime", "1s", "--keep")
	out, err := cmd.CombinedOutput()
	if m := regexp.MustCompile(`keeping (\S+)`).FindSubmatch(out); m != nil {
		t.Cleanup(func() { os.RemoveAll(string(m[1])) })
		if _, lookErr := exec.LookPath("qemu-img"); lookErr == nil {
			for _, img := range []string{"overlay.qcow2", "snapshot.qcow2"} {
				check, cerr := exec.Command("qemu-img", "check", filepath.Join(string(m[1]), img)).CombinedOutput()
				if cerr != nil || !strings.Contains(string(check), "No errors were found") {
					t.Errorf("qemu-img check %s: %v\n%s", img, cerr, check)
				}
			}
		}
	}
	if err != nil {
		t.Fatalf("minivmm run: %v\n%s", err, out)
	}
	for _, want := range []string{"read:  IOPS=", "write: IOPS=", "0 mismatches", "Jobs: 2:",
		"live snapshot: snapshot.qcow2 over overlay.qcow2", "pivot onto base.raw",
		"checks: workload ok, live snapshot and commits ok, read back ok, fds ok, VMM exit ok, images ok"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestRunCommandUserImage: a user's image gets a read-only pass unless
// --write is given; what a writing pass stamped, a later read-only pass
// checks.
func TestRunCommandUserImage(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "user.raw")
	os.WriteFile(path, nil, 0o600)
	os.Truncate(path, 8<<20)
	if out, err := exec.Command(binary, "run", "--workload", "rw=randwrite", path).CombinedOutput(); err == nil || !strings.Contains(string(out), "give --write") {
		t.Errorf("a writing workload without --write: %v\n%s", err, out)
	}
	if out, err := exec.Command(binary, "run", "--write", "--runtime", "500ms", path).CombinedOutput(); err != nil {
		t.Fatalf("--write: %v\n%s", err, out)
	}
	before, _ := os.ReadFile(path)
	out, err := exec.Command(binary, "run", "--runtime", "500ms", path).CombinedOutput()
	if err != nil {
		t.Fatalf("read-only pass: %v\n%s", err, out)
	}
	if m := regexp.MustCompile(`verify: (\d+) sectors checked`).FindSubmatch(out); m == nil || string(m[1]) == "0" {
		t.Errorf("the read-only pass checked nothing:\n%s", out)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("the read-only pass changed the image")
	}
}
