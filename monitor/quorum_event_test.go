package monitor

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"minivmm/block"
	_ "minivmm/block/quorum"
	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
	"minivmm/qemuopen"
)

// TestQuorumEvents: a quorum added with blockdev-add (children as a
// JSON list of inline nodes and node-names) reports the child that
// read differently as QUORUM_REPORT_BAD, and a read without a quorum as
// QUORUM_FAILURE, in QEMU 7.2's data.
func TestQuorumEvents(t *testing.T) {
	fdtest.Check(t)
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	g := block.NewGraph(reg)
	defer g.Close()
	srv := NewServer(reg, g, NewVM(false))
	defer srv.Close()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	if _, err := srv.Listen(sock, false); err != nil {
		t.Fatal(err)
	}
	c := qmptest.Dial(t, sock)
	defer c.Close()
	c.Negotiate()

	dir := t.TempDir()
	var paths []string
	for i := range 3 {
		p := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(p, bytes.Repeat([]byte{0x11}, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	if r := c.Execute("blockdev-add", map[string]any{"driver": "file", "node-name": "c2", "filename": paths[2]}); r["return"] == nil {
		t.Fatalf("blockdev-add c2: %v", r)
	}
	r := c.Execute("blockdev-add", map[string]any{"driver": "quorum", "node-name": "q", "vote-threshold": 2,
		"children": []any{
			map[string]any{"driver": "file", "node-name": "c0", "filename": paths[0]},
			map[string]any{"driver": "file", "node-name": "c1", "filename": paths[1]},
			"c2",
		}})
	if r["return"] == nil {
		t.Fatalf("blockdev-add q: %v", r)
	}
	q, ok := g.Node("q")
	if !ok {
		t.Fatal("no node q")
	}
	poke := func(i int, b byte) {
		f, err := os.OpenFile(paths[i], os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(bytes.Repeat([]byte{b}, 512), 4096); err != nil {
			t.Fatal(err)
		}
	}
	want := func(event string, data map[string]any) {
		t.Helper()
		ev := c.Event(event, 5*time.Second)
		if got, _ := ev["data"].(map[string]any); fmt.Sprint(got) != fmt.Sprint(data) {
			t.Errorf("%s data = %v, want %v", event, got, data)
		}
	}
	poke(1, 0xee)
	if _, err := q.ReadAt(make([]byte, 1024), 4096); err != nil {
		t.Fatal(err)
	}
	want("QUORUM_REPORT_BAD", map[string]any{"type": "read", "node-name": "c1", "sector-num": 8, "sectors-count": 2})
	poke(2, 0xdd)
	if _, err := q.ReadAt(make([]byte, 512), 4096); err == nil {
		t.Fatal("a read without a quorum succeeded")
	}
	want("QUORUM_FAILURE", map[string]any{"reference": "q", "sector-num": 8, "sectors-count": 1})
	if r := c.Execute("blockdev-del", map[string]any{"node-name": "q"}); r["return"] == nil {
		t.Fatalf("blockdev-del: %v", r)
	}
}
