package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"minivmm/internal/qmptest"
)

// TestNBDExportUnderSnapshotAndStream: the export's node is a user like
// a device: a snapshot taken under it moves the export onto the overlay
// (writes land there, the base is left as it was), and a stream job runs
// under it with clients connected.
func TestNBDExportUnderSnapshotAndStream(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	img := nbdImage(t, dir)
	uri, p := startNBDExport(t, dir, img)
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	ov := filepath.Join(dir, "ov.qcow2")
	if r := c.Execute("blockdev-snapshot-sync", map[string]any{"node-name": "q", "snapshot-file": ov, "snapshot-node-name": "ov", "format": "qcow2"}); r["error"] != nil {
		t.Fatal(r)
	}
	out := output(t, "qemu-io", "-f", "raw", "-c", "write -P 0x3c 32M 64k", "-c", "read -P 0xab 0 1M", uri)
	if strings.Contains(out, "failed") {
		t.Fatal(out)
	}
	// The base stays as it was; the overlay holds the write.
	if out := output(t, "qemu-img", "map", "--output=json", "-U", "-f", "qcow2", img); strings.Contains(out, `"start": 33554432, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true`) {
		t.Errorf("the write reached the base:\n%s", out)
	}
	if r := c.Execute("block-stream", map[string]any{"job-id": "s", "device": "ov"}); r["error"] != nil {
		t.Fatal(r)
	}
	c.Event("BLOCK_JOB_COMPLETED", 30*time.Second)
	if out := output(t, "qemu-io", "-f", "raw", "-c", "read -P 0xab 0 1M", "-c", "read -P 0x3c 32M 64k", "-c", "read -P 0 4M 1M", uri); strings.Contains(out, "failed") {
		t.Fatal(out)
	}
	c.Execute("quit", nil)
	c.WaitClosed(10 * time.Second)
	for i := 0; i < 1000 && p.Signal(syscall.Signal(0)) == nil; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	out = output(t, "qemu-img", "info", "-f", "qcow2", ov)
	if strings.Contains(out, "backing file:") {
		t.Errorf("the overlay still has a backing file after the stream:\n%s", out)
	}
	if out := output(t, "qemu-io", "-f", "qcow2", "-c", "read -P 0xab 0 1M", "-c", "read -P 0x3c 32M 64k", ov); strings.Contains(out, "failed") {
		t.Errorf("overlay after stream: %s", out)
	}
	mustRun(t, "qemu-img", "check", ov)
}
