package jobs

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// hookFormat is a pass-through format whose first large read (a stream
// step's, not a copy-on-write's cluster) calls onRead first.
type hookFormat struct {
	file   *block.Node
	once   *sync.Once
	onRead func(off int64)
}

func (h *hookFormat) ReadAt(p []byte, off int64) (int, error) {
	if len(p) > 64<<10 {
		h.once.Do(func() { h.onRead(off) })
	}
	return h.file.ReadAt(p, off)
}
func (h *hookFormat) WriteAt(p []byte, off int64) (int, error) { return h.file.WriteAt(p, off) }
func (h *hookFormat) Flush() error                             { return h.file.Flush() }
func (h *hookFormat) Length() (int64, error)                   { return h.file.Length(), nil }
func (h *hookFormat) Close() error                             { return nil }

// TestStreamKeepsRacingWrite: a guest write to the very range a stream
// step is copying, made while the step reads the backing data, is what
// the top holds afterwards. Without the serialising hold the step would
// write the older backing data over it.
func TestStreamKeepsRacingWrite(t *testing.T) {
	fdtest.Check(t)
	dir := t.TempDir()
	midPath := filepath.Join(dir, "mid.raw")
	if err := os.WriteFile(midPath, bytes.Repeat([]byte{0x22}, 2*mib), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "top.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	err = qcow2.Create(qcow2.FdTarget(int(f.Fd())), qcow2.CreateOptions{Size: 2 * mib, BackingFile: midPath, BackingFormat: "raw"})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	defer reg.CloseAll()
	defer g.Close()

	var top *block.Node
	written := make(chan error, 1)
	guest := bytes.Repeat([]byte{0x99}, 4096)
	hook := &hookFormat{once: &sync.Once{}, onRead: func(off int64) {
		// The guest writes where the step copies; with the hold, that
		// write waits for the step, so it is not waited for long here.
		go func() { _, err := top.WriteAt(guest, off+8192); written <- err }()
		select {
		case err := <-written:
			written <- err
		case <-time.After(100 * time.Millisecond):
		}
	}}
	if err := g.AddDriver(&block.Driver{Name: "hook", Format: true, Open: func(o *block.OpenContext) (block.Image, error) {
		hook.file = o.Child("file")
		return hook, nil
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Add(block.Options{"driver": "hook", "node-name": "mid", "read-only": true,
		"file": block.Options{"driver": "file", "filename": midPath}}); err != nil {
		t.Fatal(err)
	}
	top, err = g.Add(block.Options{"driver": "qcow2", "node-name": "top", "backing": "mid",
		"file": block.Options{"driver": "file", "filename": filepath.Join(dir, "top.qcow2")}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := g.Attach("drive0", top, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Detach(w)
	m := NewManager(nil)
	j, err := m.Start(Spec{ID: "s", Type: "stream", AutoFinalize: true, AutoDismiss: true}, &Stream{Graph: g, Top: top})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, j)
	if err := j.Err(); err != nil {
		t.Fatal(err)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{0x22}, 2*mib)
	copy(want[8192:], guest)
	if got := readAll(t, top); !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		t.Fatalf("top differs from what was written at offset %d", i)
	}
	if top.Child("backing") != nil {
		t.Error("top still has a backing file")
	}
}
