package qcow2

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"minivmm/block"
	"minivmm/block/faultdisk"
)

// faultImage makes an image with qemu-img create (-o opts, size), loads
// it into a fault-injecting disk and opens it read-write on that disk,
// with a writer attached: the node, the driver's image and the disk.
func faultImage(t *testing.T, opts, size string) (*block.Graph, *block.Node, *image, *faultdisk.Disk) {
	t.Helper()
	needQemu(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "f.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, path, size)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := faultdisk.Load(b)
	g := parallelFixture(t)
	if err := d.Install(g, "fault"); err != nil {
		t.Fatal(err)
	}
	n, q, err := openCaptureOpts(g, block.Options{"driver": "qcow2", "read-only": false, "discard": "unmap",
		"file": block.Options{"driver": "fault", "filename": path}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Attach("", n, block.Perm{Write: true}); err != nil {
		t.Fatal(err)
	}
	return g, n, q, d
}

// qemuCheckBytes writes an image's bytes to a file and runs qemu-img check
// on it: the exit status (0 clean, 2 corruptions, 3 leaks) and output.
func qemuCheckBytes(t *testing.T, b []byte) (int, string) {
	t.Helper()
	p := writeTemp(t, "state.qcow2", b)
	return qemuCheckStatus(t, p)
}

// qemuCheckStatus runs qemu-img check on path: its exit status and output.
func qemuCheckStatus(t *testing.T, path string) (int, string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", "-f", "qcow2", path).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("qemu-img check: %v", err)
	return 0, ""
}
