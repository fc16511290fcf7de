package vhostuser_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	"minivmm/block"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
	"minivmm/vm/guestmem"
	"minivmm/vm/vhostuser"
)

// newRingDriver connects a Go front end to sock and sets up queue 0.
func newRingDriver(t *testing.T, sock string) *ringDriver {
	t.Helper()
	mem, err := guestmem.NewMemfd("snapshot-test", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	fe, err := vhostuser.Dial(sock, mem)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fe.Close() })
	if err := fe.SetFeatures(1<<32 | 1<<9); err != nil {
		t.Fatal(err)
	}
	if err := fe.SetupQueue(0, 16, descGPA, availGPA, usedGPA); err != nil {
		t.Fatal(err)
	}
	if err := fe.Start(); err != nil {
		t.Fatal(err)
	}
	return &ringDriver{t: t, mem: mem, fe: fe, size: 16}
}

// TestExportFollowsSnapshot: the export uses its node as a device does,
// so a live snapshot of the node moves the export to the overlay under a
// connected front end: later writes land in the overlay, the base keeps
// what it had, and query-block-exports names the overlay (as QEMU's
// blk_bs does).
func TestExportFollowsSnapshot(t *testing.T) {
	fdtest.Check(t)
	dir := t.TempDir()
	base, ov, sock := filepath.Join(dir, "base.raw"), filepath.Join(dir, "ov.qcow2"), filepath.Join(dir, "vu.sock")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "raw", base, "1M")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", ov)
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	g := block.NewGraph(reg)
	defer g.Close()
	if _, err := g.AddRoot(block.Options{"driver": "raw", "node-name": "d",
		"file": block.Options{"driver": "file", "filename": base}}); err != nil {
		t.Fatal(err)
	}
	x := vhostuser.NewExports(g, t.Logf)
	defer x.CloseAll()
	if err := x.Add(vhostuser.ExportOptions{ID: "e", NodeName: "d", Path: sock, Writable: true, NumQueues: 1, LogicalBlockSize: 512}); err != nil {
		t.Fatal(err)
	}
	d := newRingDriver(t, sock)
	before, after := bytes.Repeat([]byte{0xc3}, 4096), bytes.Repeat([]byte{0x3c}, 4096)
	if _, st := d.do(1, 8, before, 4096); st != 0 {
		t.Fatalf("write status %d", st)
	}
	if err := g.Snapshot([]block.SnapshotAction{{Sync: &block.SnapshotSync{NodeName: "d", File: ov, OverlayName: "ov", Existing: true}}}); err != nil {
		t.Fatal(err)
	}
	if l := x.List(); len(l) != 1 || l[0].NodeName != "ov" {
		t.Errorf("query-block-exports after the snapshot: %+v, want node-name ov", l)
	}
	if _, st := d.do(1, 16, after, 4096); st != 0 {
		t.Fatalf("write after the snapshot: status %d", st)
	}
	if got, st := d.do(0, 8, nil, 4096); st != 0 || !bytes.Equal(got, before) {
		t.Errorf("read through the overlay of what the base holds: status %d, equal %v", st, bytes.Equal(got, before))
	}
	if _, st := d.do(4, 0, nil, 0); st != 0 {
		t.Fatalf("flush status %d", st)
	}
	qemuTool(t, "qemu-io", "-r", "-U", "-f", "raw", "-c", "read -P 0xc3 4096 4096", "-c", fmt.Sprintf("read -P 0 %d 4096", 16*512), base)
	qemuTool(t, "qemu-io", "-r", "-U", "-f", "qcow2", "-c", "read -P 0xc3 4096 4096", "-c", fmt.Sprintf("read -P 0x3c %d 4096", 16*512), ov)
}
