package jobs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"minivmm/block"
	"minivmm/block/faultdisk"
	"minivmm/block/qcow2"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// faultChain is base (raw, on a faultdisk of 4 MiB) <- mid (qcow2 with 3
// MiB of 0x22) <- top (qcow2), in a fresh graph.
func faultChain(t *testing.T) (g *block.Graph, d *faultdisk.Disk, base, mid, top *block.Node) {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"mid", "top"} {
		f, err := os.Create(filepath.Join(dir, name+".qcow2"))
		if err != nil {
			t.Fatal(err)
		}
		err = qcow2.Create(qcow2.FdTarget(int(f.Fd())), qcow2.CreateOptions{Size: 4 * mib})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	fillImage(t, dir, "mid", 0, 3*mib, 0x22)
	reg := qemuopen.New(qemuopen.Config{})
	g = block.NewGraph(reg)
	t.Cleanup(func() { g.Close(); reg.CloseAll() })
	d = faultdisk.New(4 * mib)
	if err := d.Install(g, "fault"); err != nil {
		t.Fatal(err)
	}
	var err error
	if base, err = g.Add(block.Options{"driver": "raw", "node-name": "base", "read-only": false, "file": block.Options{"driver": "fault"}}); err != nil {
		t.Fatal(err)
	}
	add := func(name, backing string, ro bool) *block.Node {
		n, err := g.Add(block.Options{"driver": "qcow2", "node-name": name, "read-only": ro, "backing": backing,
			"file": block.Options{"driver": "file", "filename": filepath.Join(dir, name+".qcow2")}})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	mid = add("mid", "base", true)
	top = add("top", "mid", false)
	return g, d, base, mid, top
}

// TestCommitOnError: a base that runs out of space stops an on-error=enospc
// commit (BLOCK_JOB_ERROR "stop", paused, io-status nospace) until it is
// resumed with room again; with on-error=report the job fails with QEMU's
// text and the chain is left as it was.
func TestCommitOnError(t *testing.T) {
	fdtest.Check(t)
	t.Run("enospc", func(t *testing.T) {
		g, d, base, mid, top := faultChain(t)
		want := readAll(t, top)
		d.SetSpaceLimit(1 * mib)
		r := newRecorder()
		m := NewManager(r.emit)
		j, err := m.Start(Spec{ID: "c", Type: "commit", OnError: "enospc", AutoFinalize: true, AutoDismiss: true},
			&Commit{Graph: g, Top: mid, Base: base})
		if err != nil {
			t.Fatal(err)
		}
		r.waitFor(t, "JOB_STATUS_CHANGE paused")
		if in := j.Info(); in.IOStatus != "nospace" || !in.Paused || in.Status != Paused {
			t.Errorf("stopped job: %+v", in)
		}
		r.mu.Lock()
		var errData []Field
		for i, e := range r.events {
			if e == "BLOCK_JOB_ERROR" {
				errData = r.data[i]
			}
		}
		r.mu.Unlock()
		if len(errData) != 3 || errData[1].Value != "write" || errData[2].Value != "stop" {
			t.Errorf("BLOCK_JOB_ERROR %v", errData)
		}
		d.SetSpaceLimit(8 * mib)
		if err := j.Resume(); err != nil {
			t.Fatal(err)
		}
		waitJob(t, j)
		if err := j.Err(); err != nil {
			t.Fatal(err)
		}
		if top.Child("backing") != base || !bytes.Equal(readAll(t, top), want) {
			t.Error("chain or content wrong after the commit")
		}
		if got := readAll(t, base)[:3*mib]; !bytes.Equal(got, bytes.Repeat([]byte{0x22}, 3*mib)) {
			t.Error("base does not hold mid's data")
		}
	})
	t.Run("report", func(t *testing.T) {
		g, d, base, mid, top := faultChain(t)
		want := readAll(t, top)
		d.SetSpaceLimit(1 * mib)
		r := newRecorder()
		m := NewManager(r.emit)
		j, err := m.Start(Spec{ID: "c", Type: "commit", AutoFinalize: true, AutoDismiss: false},
			&Commit{Graph: g, Top: mid, Base: base})
		if err != nil {
			t.Fatal(err)
		}
		waitJob(t, j)
		if in := j.Info(); in.Error != "No space left on device" || in.Status != Concluded {
			t.Errorf("failed job: %+v", in)
		}
		if top.Child("backing") != mid || !bytes.Equal(readAll(t, top), want) {
			t.Error("a failed commit changed the chain or its content")
		}
		if err := j.Dismiss(); err != nil {
			t.Fatal(err)
		}
	})
}
