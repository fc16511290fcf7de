package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunAsQemuTools: a link named qemu-img or qemu-io to minivmm is that
// tool, naming itself as run, so scripts that call QEMU's tools by name
// (QEMU's iotests among them) run unchanged.
func TestRunAsQemuTools(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, name := range []string{"qemu-img", "qemu-io"} {
		if err := os.Symlink(binary, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing.qcow2")
	for _, c := range []struct {
		args       []string
		out, errs  string
		wantStatus int
	}{
		{[]string{"qemu-img", "--version"}, "qemu-img version 7.2.0 (minivmm ", "", 0},
		{[]string{"qemu-io", "--version"}, "qemu-io version 7.2.0 (minivmm ", "", 0},
		{[]string{"qemu-img", "info", missing}, "", "qemu-img: Could not open '" + missing + "': ", 1},
		{[]string{"qemu-io", "-c", "read 0 1", missing}, "", "qemu-io: can't open device " + missing + ": ", 1},
	} {
		cmd := exec.Command(filepath.Join(dir, c.args[0]), c.args[1:]...)
		var out, errs strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errs
		err := cmd.Run()
		status := 0
		if ee, ok := err.(*exec.ExitError); ok {
			status = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(out.String(), c.out) || !strings.HasPrefix(errs.String(), c.errs) || status != c.wantStatus {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", c.args, status, out.String(), errs.String())
		}
	}
}
