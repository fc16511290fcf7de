package filter_test

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"minivmm/block"
	_ "minivmm/block/file"
	"minivmm/block/qcow2"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

const mib = 1 << 20

// TestCopyOnReadRacesWrites: reads through a copy-on-read node copy the
// backing file's data into its child while writes to the same ranges go
// on; no copy overwrites a write made after its read (the copies are
// serialised against writes), every range reads as the last write or
// the backing data, and the child ends up holding every range read.
func TestCopyOnReadRacesWrites(t *testing.T) {
	fdtest.Check(t)
	dir := t.TempDir()
	for _, name := range []string{"base", "top"} {
		f, err := os.Create(filepath.Join(dir, name+".qcow2"))
		if err != nil {
			t.Fatal(err)
		}
		co := qcow2.CreateOptions{Size: 4 * mib}
		if name == "top" {
			co.BackingFile, co.BackingFormat = "base.qcow2", "qcow2"
		}
		err = qcow2.Create(qcow2.FdTarget(int(f.Fd())), co)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	g := block.NewGraph(reg)
	defer g.Close()
	base, err := g.Add(block.Options{"driver": "qcow2", "node-name": "base",
		"file": block.Options{"driver": "file", "filename": filepath.Join(dir, "base.qcow2")}})
	if err != nil {
		t.Fatal(err)
	}
	bw, err := g.Attach("b", base, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bw.WriteAt(bytes.Repeat([]byte{0x11}, 4*mib), 0); err != nil {
		t.Fatal(err)
	}
	if err := g.Detach(bw); err != nil {
		t.Fatal(err)
	}
	if err := g.Delete("base"); err != nil {
		t.Fatal(err)
	}
	cor, err := g.Add(block.Options{"driver": "copy-on-read", "node-name": "cor",
		"file": block.Options{"driver": "qcow2", "node-name": "top",
			"file": block.Options{"driver": "file", "filename": filepath.Join(dir, "top.qcow2")}}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := g.Attach("d", cor, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	// Writes of 4 KiB, each at its own offset, inside the 64 KiB clusters
	// the reads copy whole.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for off := int64(0); off < 4*mib; off += 64 << 10 {
			if _, err := w.WriteAt(bytes.Repeat([]byte{0x22}, 4096), off+8192); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		p := make([]byte, 512)
		for off := int64(0); off < 4*mib; off += 64 << 10 {
			if _, err := w.ReadAt(p, off); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	got := make([]byte, 4*mib)
	if _, err := w.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < 4*mib; off += 64 << 10 {
		want := bytes.Repeat([]byte{0x11}, 64<<10)
		copy(want[8192:], bytes.Repeat([]byte{0x22}, 4096))
		if !bytes.Equal(got[off:off+64<<10], want) {
			t.Fatalf("cluster at %d: a copy overwrote a write or lost the backing data", off)
		}
		top := cor.Child("file")
		if alloc, _, err := block.Allocated(top, off, 64<<10); err != nil || !alloc {
			t.Fatalf("cluster at %d not in the child after a read through copy-on-read: %v", off, err)
		}
	}
}

// TestCopyOnReadBottom: with bottom, a read copies up what the chain
// holds down to bottom and reads through what only the layers below it
// hold (QEMU's copy-on-read "bottom", which block-stream sets to the
// node above its base); an unknown bottom is refused in QEMU's words.
func TestCopyOnReadBottom(t *testing.T) {
	fdtest.Check(t)
	dir := t.TempDir()
	// base holds 0x11 in the first MiB, mid 0x22 in the second, top
	// nothing.
	chain := []string{"base", "mid", "top"}
	for i, name := range chain {
		f, err := os.Create(filepath.Join(dir, name+".qcow2"))
		if err != nil {
			t.Fatal(err)
		}
		co := qcow2.CreateOptions{Size: 4 * mib}
		if i > 0 {
			co.BackingFile, co.BackingFormat = chain[i-1]+".qcow2", "qcow2"
		}
		err = qcow2.Create(qcow2.FdTarget(int(f.Fd())), co)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	g := block.NewGraph(reg)
	defer g.Close()
	for i, name := range chain[:2] {
		n, err := g.Add(block.Options{"driver": "qcow2", "node-name": name, "backing": nil,
			"file": block.Options{"driver": "file", "filename": filepath.Join(dir, name+".qcow2")}})
		if err != nil {
			t.Fatal(err)
		}
		w, err := g.Attach(name+"-w", n, block.Perm{Write: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteAt(bytes.Repeat([]byte{byte(0x11 * (i + 1))}, mib), int64(i)*mib); err != nil {
			t.Fatal(err)
		}
		if err := g.Detach(w); err != nil {
			t.Fatal(err)
		}
		if err := g.Delete(name); err != nil {
			t.Fatal(err)
		}
	}
	top, err := g.Add(block.Options{"driver": "qcow2", "node-name": "top",
		"file": block.Options{"driver": "file", "filename": filepath.Join(dir, "top.qcow2")}})
	if err != nil {
		t.Fatal(err)
	}
	mid := top.Child("backing")
	if _, err := g.Add(block.Options{"driver": "copy-on-read", "file": "top", "bottom": "nosuch"}); err == nil ||
		err.Error() != "Bottom node 'nosuch' not found" {
		t.Fatalf("unknown bottom: %v, want QEMU's refusal", err)
	}
	cor, err := g.Add(block.Options{"driver": "copy-on-read", "node-name": "cor", "file": "top", "bottom": mid.Name()})
	if err != nil {
		t.Fatal(err)
	}
	r, err := g.Attach("r", cor, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3*mib)
	if _, err := r.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		off       int64
		fill      byte
		copiedUp  bool
		whoseData string
	}{
		{0, 0x11, false, "base's (below bottom)"},
		{mib, 0x22, true, "mid's (bottom)"},
		{2 * mib, 0, false, "nobody's"},
	} {
		if !bytes.Equal(got[c.off:c.off+mib], bytes.Repeat([]byte{c.fill}, mib)) {
			t.Errorf("MiB at %d does not read as %#x", c.off, c.fill)
		}
		alloc, n, err := block.Allocated(top, c.off, mib)
		if err != nil {
			t.Fatal(err)
		}
		if alloc != c.copiedUp || n != mib {
			t.Errorf("%s data at %d: in top %v (for %d bytes), want %v", c.whoseData, c.off, alloc, n, c.copiedUp)
		}
	}
	if err := g.Detach(r); err != nil {
		t.Fatal(err)
	}
}
