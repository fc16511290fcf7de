package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
)

// TestActiveCommitKilled kills minivmm (SIGKILL) at points through an
// active block-commit, from mid-copy to after the switch: qemu-img check
// finds no error in any image (leaks allowed, as after a killed QEMU),
// the chain as the headers name it reads as before, and once the switch
// was made the base alone reads so too.
func TestActiveCommitKilled(t *testing.T) {
	fdtest.Check(t)
	needTools(t, "qemu-img", "qemu-io")
	ref := t.TempDir()
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(ref, "base.qcow2"), "16M")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", filepath.Join(ref, "mid.qcow2"), "16M")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", filepath.Join(ref, "top.qcow2"), "16M")
	mustRun(t, "qemu-io", "-c", "write -P 1 0 8M", filepath.Join(ref, "base.qcow2"))
	mustRun(t, "qemu-io", "-c", "write -P 2 1M 10M", "-c", "write -z 12M 1M", filepath.Join(ref, "mid.qcow2"))
	mustRun(t, "qemu-io", "-c", "write -P 3 4M 1M", "-c", "write -z 2M 64k", filepath.Join(ref, "top.qcow2"))
	for _, tc := range []struct {
		speed    int64
		after    time.Duration
		complete bool
	}{
		{8 << 20, 200 * time.Millisecond, false}, {8 << 20, 700 * time.Millisecond, false},
		{0, 0, false}, {0, 5 * time.Millisecond, false}, {0, 20 * time.Millisecond, false},
		{0, 0, true},
	} {
		t.Run(fmt.Sprintf("speed%d_after%v_complete%v", tc.speed, tc.after, tc.complete), func(t *testing.T) {
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
				fmt.Sprintf(`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","speed":%d}}`, tc.speed),
			} {
				c.Send(cmd)
				if r := c.Reply(); r["error"] != nil {
					t.Fatalf("%s: %v", cmd, r)
				}
			}
			if tc.complete {
				c.Event("BLOCK_JOB_READY", 20*time.Second)
				c.Send(`{"execute":"block-job-complete","arguments":{"device":"j"}}`)
				c.Event("BLOCK_JOB_COMPLETED", 20*time.Second)
			}
			time.Sleep(tc.after)
			if err := p.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			p.Wait(10 * time.Second)
			for _, img := range []string{"base", "mid", "top"} {
				out, err := exec.Command("qemu-img", "check", filepath.Join(dir, img+".qcow2")).CombinedOutput()
				if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 3) {
					t.Errorf("qemu-img check %s: %v\n%s", img, err, out)
				}
			}
			if out, err := exec.Command("qemu-img", "compare", filepath.Join(ref, "top.qcow2"), filepath.Join(dir, "top.qcow2")).CombinedOutput(); err != nil {
				t.Errorf("qemu-img compare top: %v\n%s", err, out)
			}
			if tc.complete {
				if out, err := exec.Command("qemu-img", "compare", filepath.Join(ref, "top.qcow2"), filepath.Join(dir, "base.qcow2")).CombinedOutput(); err != nil {
					t.Errorf("qemu-img compare base after the switch: %v\n%s", err, out)
				}
			}
		})
	}
}
