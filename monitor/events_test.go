package monitor

import (
	"path/filepath"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
	"minivmm/qemuopen"
)

// TestBlockImageCorrupted: corruption a driver reports reaches negotiated
// clients as QEMU's BLOCK_IMAGE_CORRUPTED.
func TestBlockImageCorrupted(t *testing.T) {
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
	g.ReportCorruption(block.Corruption{Node: "disk", Msg: "Preventing invalid write on metadata (overlaps with active L1 table)", Offset: 196608, Size: 512, Fatal: true})
	ev := c.Event("BLOCK_IMAGE_CORRUPTED", 5*time.Second)
	data := ev["data"].(map[string]any)
	if data["node-name"] != "disk" || data["device"] != "" || data["fatal"] != true || data["offset"].(interface{ String() string }).String() != "196608" {
		t.Fatalf("event = %v", ev)
	}
}
