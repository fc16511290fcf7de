package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(ref, "base.qcow2"), "16M")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", filepath.Join(ref, "mid.qcow2"), "16M")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", filepath.Join(ref, "top.qcow2"), "16M")
	mustRun(t, "qemu-io", "-c", "write -P 1 0 8M", filepath.Join(ref, "base.qcow2"))
	mustRun(t, "qemu-io", "-c", "write -P 2 1M 10M", "-c", "write -z 12M 1M", filepath.Join(ref, "mid.qcow2"))
	mustRun(t, "qemu-io", "-c", "write -P 3 4M 1M", filepath.Join(ref, "top.qcow2"))
	for _, tc := range []struct {
		speed int64
		after time.Duration
	}{
		{8 << 20, 200 * time.Millisecond}, {8 << 20, 700 * time.Millisecond},
		{0, 0}, {0, 5 * time.Millisecond}, {0, 20 * time.Millisecond}, {0, 60 * time.Millisecond},
	} {
		t.Run(fmt.Sprintf("speed%d_after%v", tc.speed, tc.after), func(t *testing.T) {
			dir := t.TempDir()
			for _, img := range []string{"base", "mid", "top"} {
				mustRun(t, "cp", filepath.Join(ref, img+".qcow2"), dir)
			}
			p := startVMM(t, nil)
			c := qmptest.Dial(t, p.Sock)
			defer c.Close()
			c.Negotiate()
			for _, cmd := range []string{
				`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"base","read-only":true,"file":{"driver":"file","filename":"` + filepath.Join(dir, "base.qcow2") + `"}}}`,
				`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"mid","read-only":true,"backing":"base","file":{"driver":"file","filename":"` + filepath.Join(dir, "mid.qcow2") + `"}}}`,
				`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"top","backing":"mid","file":{"driver":"file","filename":"` + filepath.Join(dir, "top.qcow2") + `"}}}`,
				fmt.Sprintf(`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","top-node":"mid","base-node":"base","speed":%d}}`, tc.speed),
			} {
				c.Send(cmd)
				if r := c.Reply(); r["error"] != nil {
					t.Fatalf("%s: %v", cmd, r)
				}
			}
			time.Sleep(tc.after)
			if err := p.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			p.Wait(10 * time.Second)
			// Clusters a killed writer allocated but had not yet
			// referenced are leaks (exit status 3: "no harm to data"), as
			// after QEMU is killed; anything else is not accepted.
			for _, img := range []string{"base", "mid", "top"} {
				out, err := exec.Command("qemu-img", "check", filepath.Join(dir, img+".qcow2")).CombinedOutput()
				if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 3) {
					t.Errorf("qemu-img check %s: %v\n%s", img, err, out)
				}
			}
			if out, err := exec.Command("qemu-img", "compare", filepath.Join(ref, "top.qcow2"), filepath.Join(dir, "top.qcow2")).CombinedOutput(); err != nil {
				t.Errorf("qemu-img compare: %v\n%s", err, out)
			}
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
