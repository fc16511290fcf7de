package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"minivmm/internal/fdtest"
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
	killChain(t, ref, "write -P 3 4M 1M", "write -z 2M 64k")
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
			dir, p, c := startKillChain(t, ref, fmt.Sprintf(`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","speed":%d}}`, tc.speed))
			defer c.Close()
			if tc.complete {
				c.Event("BLOCK_JOB_READY", 20*time.Second)
				c.Send(`{"execute":"block-job-complete","arguments":{"device":"j"}}`)
				c.Event("BLOCK_JOB_COMPLETED", 20*time.Second)
			}
			killAndCheck(t, p, tc.after, ref, dir)
			if tc.complete {
				if out, err := exec.Command("qemu-img", "compare", filepath.Join(ref, "top.qcow2"), filepath.Join(dir, "base.qcow2")).CombinedOutput(); err != nil {
					t.Errorf("qemu-img compare base after the switch: %v\n%s", err, out)
				}
			}
		})
	}
}
