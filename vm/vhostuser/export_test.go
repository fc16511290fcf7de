package vhostuser_test

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/vm/vhostuser"
)

func nullGraph(t *testing.T) *block.Graph {
	t.Helper()
	g := block.NewGraph(nil)
	if _, err := g.AddRoot(block.Options{"driver": "null-co", "node-name": "d", "size": int64(1 << 20)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// TestExportDeleteModes: a safe removal of an export a front end is
// connected to fails and leaves it serving (QEMU's documented rule, which
// qemu-storage-daemon's vhost-user-blk export does not keep: it
// disconnects the guest); a hard one disconnects it. Both give the node
// back and report the deletion.
func TestExportDeleteModes(t *testing.T) {
	g := nullGraph(t)
	x := vhostuser.NewExports(g, t.Logf)
	var deleted []string
	x.OnDeleted(func(id string) { deleted = append(deleted, id) })
	sock := filepath.Join(t.TempDir(), "vu.sock")
	if err := x.Add(vhostuser.ExportOptions{ID: "e", NodeName: "d", Path: sock, Writable: true, NumQueues: 1, LogicalBlockSize: 512}); err != nil {
		t.Fatal(err)
	}
	if err := g.Delete("d"); err == nil || err.Error() != "Node d is in use" {
		t.Fatalf("blockdev-del of the exported node: %v", err)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// GET_FEATURES and its reply: the front end is being served.
	if _, err := c.Write([]byte{1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 20)); err != nil {
		t.Fatal(err)
	}
	var inUse *vhostuser.InUseError
	err = x.Delete("e", false)
	if !errors.As(err, &inUse) || err.Error() != "export 'e' still in use" || inUse.Hint() != "Use mode='hard' to force client disconnect" {
		t.Fatalf("safe removal with a front end connected: %v", err)
	}
	if len(x.List()) != 1 || len(deleted) != 0 {
		t.Fatalf("a refused removal changed the exports: %v, deleted %v", x.List(), deleted)
	}
	if err := x.Delete("e", true); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the front end is still connected after a hard removal")
	}
	if len(x.List()) != 0 || len(deleted) != 1 || deleted[0] != "e" {
		t.Errorf("after removal: exports %v, deleted %v", x.List(), deleted)
	}
	if err := g.Delete("d"); err != nil {
		t.Errorf("blockdev-del after the export went: %v", err)
	}
}

// TestExportSocketPath: a stale socket at the path is replaced, as QEMU
// does; anything else there is left alone (QEMU would unlink it).
func TestExportSocketPath(t *testing.T) {
	g := nullGraph(t)
	x := vhostuser.NewExports(g, t.Logf)
	defer x.CloseAll()
	dir := t.TempDir()
	file := filepath.Join(dir, "image")
	if err := os.WriteFile(file, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := vhostuser.ExportOptions{ID: "e", NodeName: "d", Path: file, NumQueues: 1, LogicalBlockSize: 512}
	err := x.Add(o)
	if want := "Failed to bind socket to " + file + ": Address already in use"; err == nil || err.Error() != want {
		t.Errorf("export over a file: %v, want %q", err, want)
	}
	if b, _ := os.ReadFile(file); string(b) != "data" {
		t.Error("the file at the socket path was touched")
	}
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	o.Path = stale
	if err := x.Add(o); err != nil {
		t.Fatalf("export over a stale socket: %v", err)
	}
}
