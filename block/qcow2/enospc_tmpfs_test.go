package qcow2

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"golang.org/x/sys/unix"
)

// fullTmpfs mounts a tmpfs of size bytes in a temporary directory,
// unmounted when the test ends. Without the right to mount (not root, or
// in a container without CAP_SYS_ADMIN) the test is skipped, except in
// CI, where it must run.
func fullTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount -t tmpfs: %v (CI=true: the full file system test must run)", err)
		}
		t.Skipf("mount -t tmpfs not permitted (%v): run as root for the full file system test", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("umount %s: %v", dir, err)
		}
	})
	return dir
}

var imageEnd = regexp.MustCompile(`Image end offset: (\d+)`)

// TestENOSPCTmpfsLikeQemu: on a full tmpfs, 13 writes of 1 MiB into a
// fresh image, most failing with ENOSPC, leave what qemu-io leaves on the
// same file system: no leaked cluster, and the same image end.
func TestENOSPCTmpfsLikeQemu(t *testing.T) {
	needQemu(t)
	dir := fullTmpfs(t, "4m")
	var cmds []string
	for i := 2; i <= 14; i++ {
		cmds = append(cmds, "write -P "+itoa(int64(i))+" "+itoa(int64(i)<<20)+" 1M")
	}

	q := filepath.Join(dir, "q.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", q, "64M")
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, _ := runQuiet(dir, "qemu-io", append(args, q)...)
	qemuFailed := bytes.Count(out, []byte("No space left on device"))
	st, qemuCheck := qemuCheckStatus(t, q)
	if st != 0 || qemuFailed == 0 {
		t.Fatalf("qemu-io: %d writes failed; qemu-img check exit %d:\n%s", qemuFailed, st, qemuCheck)
	}
	os.Remove(q)

	m := filepath.Join(dir, "m.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", m, "64M")
	g := fixture(t)
	n, b := openRW(t, g, m)
	failed := 0
	for i := 2; i <= 14; i++ {
		_, err := n.WriteAt(bytes.Repeat([]byte{byte(i)}, 1<<20), int64(i)<<20)
		switch {
		case errors.Is(err, unix.ENOSPC):
			failed++
		case err != nil:
			t.Fatalf("write %d: %v, want ENOSPC", i, err)
		}
	}
	g.Detach(b)
	if err := g.Delete(n.Name()); err != nil {
		t.Fatal(err)
	}
	st, ourCheck := qemuCheckStatus(t, m)
	if st != 0 {
		t.Fatalf("%d writes failed with ENOSPC; qemu-img check exit %d:\n%.2000s", failed, st, ourCheck)
	}
	if failed != qemuFailed {
		t.Errorf("%d writes failed, qemu-io's %d", failed, qemuFailed)
	}
	if a, b := imageEnd.FindString(ourCheck), imageEnd.FindString(qemuCheck); a != b {
		t.Errorf("%s, qemu-io's %s", a, b)
	}
}

// runQuiet runs a tool in dir: its combined output and error, which the
// caller judges (a failure may be expected).
func runQuiet(dir, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	return cmd.CombinedOutput()
}
