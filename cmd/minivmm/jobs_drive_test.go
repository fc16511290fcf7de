package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
)

// TestJobsOnDriveChain: commit and stream on a -drive whose backing chain
// was opened from the image headers (implicit nodes, found by filename),
// with the job id defaulting to the drive's id, as libvirt's older
// callers use them; the headers end up naming what QEMU would write, and
// qemu-img reads the same chain as before.
func TestJobsOnDriveChain(t *testing.T) {
	fdtest.Check(t)
	needTools(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	path := func(n string) string { return filepath.Join(dir, n+".qcow2") }
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", path("base"), "8M")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", path("mid"), "8M")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", path("top"), "8M")
	mustRun(t, "qemu-io", "-c", "write -P 1 0 4M", path("base"))
	mustRun(t, "qemu-io", "-c", "write -P 2 2M 4M", path("mid"))
	mustRun(t, "qemu-io", "-c", "write -P 3 3M 1M", path("top"))
	mustRun(t, "cp", path("top"), filepath.Join(dir, "ref-top.qcow2"))
	mustRun(t, "cp", path("mid"), filepath.Join(dir, "ref-mid.qcow2"))
	mustRun(t, "cp", path("base"), filepath.Join(dir, "ref-base.qcow2"))
	mustRun(t, "qemu-img", "rebase", "-u", "-b", "ref-mid.qcow2", "-F", "qcow2", filepath.Join(dir, "ref-top.qcow2"))
	mustRun(t, "qemu-img", "rebase", "-u", "-b", "ref-base.qcow2", "-F", "qcow2", filepath.Join(dir, "ref-mid.qcow2"))

	p := startVMM(t, nil, "-drive", "if=none,id=d0,format=qcow2,file="+path("top"))
	c := qmptest.Dial(t, p.Sock)
	defer c.Close()
	c.Negotiate()
	backing := func() string {
		out, err := exec.Command("qemu-img", "info", "-U", path("top")).CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-img info: %v\n%s", err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(l, "backing file: "); ok {
				return v
			}
		}
		return ""
	}
	for _, step := range []struct {
		cmd, wantBacking string
	}{
		{`{"execute":"block-commit","arguments":{"device":"d0","top":"mid.qcow2","base":"base.qcow2"}}`, path("base")},
		{`{"execute":"block-stream","arguments":{"device":"d0"}}`, ""},
	} {
		c.Send(step.cmd)
		if r := c.Reply(); r["error"] != nil {
			t.Fatalf("%s: %v", step.cmd, r)
		}
		e := c.Event("BLOCK_JOB_COMPLETED", 20*time.Second)
		data := e["data"].(map[string]any)
		if data["device"] != "d0" || data["error"] != nil {
			t.Fatalf("%s: %v", step.cmd, e)
		}
		c.Event("JOB_STATUS_CHANGE", time.Second) // concluded
		if got := backing(); got != step.wantBacking {
			t.Errorf("%s: top's backing file %q, want %q", step.cmd, got, step.wantBacking)
		}
		if out, err := exec.Command("qemu-img", "compare", "-U", filepath.Join(dir, "ref-top.qcow2"), path("top")).CombinedOutput(); err != nil {
			t.Errorf("%s: qemu-img compare: %v\n%s", step.cmd, err, out)
		}
	}
	c.Send(`{"execute":"quit"}`)
	c.WaitClosed(10 * time.Second)
	p.Wait(10 * time.Second)
	for _, img := range []string{"base", "mid", "top"} {
		if out, err := exec.Command("qemu-img", "check", path(img)).CombinedOutput(); err != nil {
			t.Errorf("qemu-img check %s: %v\n%s", img, err, out)
		}
	}
}
