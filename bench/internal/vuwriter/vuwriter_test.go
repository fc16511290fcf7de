package vuwriter

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"minivmm/block"
	_ "minivmm/block/drivers" // file
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
	"minivmm/vm/vhostuser"
)

// TestWrite: blocks written through minivmm's export land in the image,
// and everything the writer opened is closed again.
func TestWrite(t *testing.T) {
	fdtest.Check(t)
	dir := t.TempDir()
	img, sock := filepath.Join(dir, "d.raw"), filepath.Join(dir, "vu.sock")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	if _, err := g.AddRoot(block.Options{"driver": "file", "node-name": "d", "filename": img}); err != nil {
		t.Fatal(err)
	}
	x := vhostuser.NewExports(g, t.Logf)
	defer func() { x.CloseAll(); g.Close(); reg.CloseAll() }()
	if err := x.Add(vhostuser.ExportOptions{ID: "e", NodeName: "d", Path: sock, Writable: true, NumQueues: 1, LogicalBlockSize: 512}); err != nil {
		t.Fatal(err)
	}
	w, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	if w.Capacity() != 1<<20 {
		t.Errorf("capacity %d", w.Capacity())
	}
	for _, off := range []int64{0, 4096, 1<<20 - 4096} {
		if d, err := w.Write(off, 4096); err != nil || d <= 0 {
			t.Fatalf("write at %d: %v (%v)", off, err, d)
		}
	}
	if _, err := w.Write(100, 4096); err == nil {
		t.Error("unaligned write accepted")
	}
	if _, err := w.Write(1<<20, 4096); err == nil {
		t.Error("write past the end succeeded")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 4096)
	for i := range want {
		want[i] = byte(i*7 + 1)
	}
	for _, off := range []int{0, 4096, 1<<20 - 4096} {
		if !bytes.Equal(got[off:off+4096], want) {
			t.Errorf("image at %d does not hold the write", off)
		}
	}
	if !bytes.Equal(got[8192:12288], make([]byte, 4096)) {
		t.Error("image changed where nothing was written")
	}
}
