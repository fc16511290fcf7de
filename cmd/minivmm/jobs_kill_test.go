package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
)

// TestCommitKilled kills minivmm (SIGKILL) at points through a block-commit
// of an intermediate image, from mid-copy to around the chain rewrite:
// qemu-img check finds no error in any image afterwards (leaks allowed), and the chain, as the
// headers now name it, reads as it did before.
func TestCommitKilled(t *testing.T) {
	fdtest.Check(t)
	needTools(t, "qemu-img", "qemu-io")
	ref := t.TempDir()
	killChain(t, ref, "write -P 3 4M 1M")
	for _, tc := range []struct {
		speed int64
		after time.Duration
	}{
		{8 << 20, 200 * time.Millisecond}, {8 << 20, 700 * time.Millisecond},
		{0, 0}, {0, 5 * time.Millisecond}, {0, 20 * time.Millisecond}, {0, 60 * time.Millisecond},
	} {
		t.Run(fmt.Sprintf("speed%d_after%v", tc.speed, tc.after), func(t *testing.T) {
			dir, p, c := startKillChain(t, ref, fmt.Sprintf(`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","top-node":"mid","base-node":"base","speed":%d}}`, tc.speed))
			defer c.Close()
			killAndCheck(t, p, tc.after, ref, dir)
		})
	}
}

// TestQuitDuringCommit: quit while a commit crawls cancels it (its events
// reach the client), the process exits at once and cleanly, and every
// image is clean, the chain unchanged.
func TestQuitDuringCommit(t *testing.T) {
	fdtest.Check(t)
	needTools(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, "base.qcow2"), "16M")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", filepath.Join(dir, "mid.qcow2"), "16M")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", filepath.Join(dir, "top.qcow2"), "16M")
	mustRun(t, "qemu-io", "-c", "write -P 2 1M 10M", filepath.Join(dir, "mid.qcow2"))
	p := startVMM(t, nil)
	c := qmptest.Dial(t, p.Sock)
	defer c.Close()
	c.Negotiate()
	for _, cmd := range []string{
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":"` + filepath.Join(dir, "top.qcow2") + `"}}}`,
		`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","top":"mid.qcow2","speed":1}}`,
		`{"execute":"quit"}`,
	} {
		c.Send(cmd)
		if r := c.Reply(); r["error"] != nil {
			t.Fatalf("%s: %v", cmd, r)
		}
	}
	c.WaitClosed(10 * time.Second)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Errorf("exit status %d\n%s", code, p.Output())
	}
	if e := c.Event("BLOCK_JOB_CANCELLED", time.Second); e == nil {
		t.Error("no BLOCK_JOB_CANCELLED")
	}
	for _, img := range []string{"base", "mid", "top"} {
		if out, err := exec.Command("qemu-img", "check", filepath.Join(dir, img+".qcow2")).CombinedOutput(); err != nil {
			t.Errorf("qemu-img check %s: %v\n%s", img, err, out)
		}
	}
	out, err := exec.Command("qemu-img", "info", "--backing-chain", filepath.Join(dir, "top.qcow2")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "backing file: mid.qcow2") {
		t.Errorf("chain changed: %v\n%s", err, out)
	}
}
