package engine

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/block/qcow2"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

const mib = 1 << 20

// chain makes base.qcow2 <- top.qcow2 (8 MiB each) in a fresh graph,
// with base holding 0x11 in its first 4 MiB and top 0x22 in [1M, 2M) and
// [5M, 6M); it returns top, opened read-only over base, and base.
func chain(t testing.TB) (g *block.Graph, top, base *block.Node, dir string) {
	t.Helper()
	dir = t.TempDir()
	mk := func(name, backing string) {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		co := qcow2.CreateOptions{Size: 8 * mib, BackingFile: backing}
		if backing != "" {
			co.BackingFormat = "qcow2"
		}
		if err := qcow2.Create(qcow2.FdTarget(int(f.Fd())), co); err != nil {
			t.Fatal(err)
		}
	}
	mk("base.qcow2", "")
	mk("top.qcow2", "base.qcow2")
	reg := qemuopen.New(qemuopen.Config{})
	g = block.NewGraph(reg)
	t.Cleanup(func() { g.Close(); reg.CloseAll() })
	open := func(name string, o block.Options) *block.Node {
		o["driver"] = "qcow2"
		o["node-name"] = name
		o["file"] = block.Options{"driver": "file", "filename": filepath.Join(dir, name+".qcow2")}
		n, err := g.Add(o)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	base = open("base", block.Options{"read-only": false})
	if _, err := g.Attach("", base, block.Perm{Write: true}); err != nil {
		t.Fatal(err)
	}
	top = open("top", block.Options{"read-only": false, "backing": "base"})
	w, err := g.Attach("", top, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	fill := func(n *block.Node, off, l int64, b byte) {
		if _, err := n.WriteAt(bytes.Repeat([]byte{b}, int(l)), off); err != nil {
			t.Fatal(err)
		}
	}
	fill(base, 0, 4*mib, 0x11)
	fill(top, 1*mib, mib, 0x22)
	fill(top, 5*mib, mib, 0x22)
	g.Detach(w)
	return g, top, base, dir
}

func read(t *testing.T, n *block.Node, off, l int64) []byte {
	t.Helper()
	p := make([]byte, l)
	if _, err := n.ReadAt(p, off); err != nil {
		t.Fatal(err)
	}
	return p
}

// countingLimiter records what it was asked to let through.
type countingLimiter struct{ bytes, calls atomic.Int64 }

func (l *countingLimiter) Wait(ctx context.Context, n int64) error {
	l.calls.Add(1)
	l.bytes.Add(n)
	return ctx.Err()
}

func TestCommit(t *testing.T) {
	fdtest.Check(t)
	_, top, base, _ := chain(t)
	want := read(t, top, 0, 8*mib)
	var lim countingLimiter
	var last, total int64
	err := Commit(context.Background(), top, base, false, Options{
		Limiter:  &lim,
		Progress: func(d, tt int64) { last, total = d, tt },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, base, 0, 8*mib); !bytes.Equal(got, want) {
		t.Error("base does not read as the chain did")
	}
	if lim.bytes.Load() != 2*mib {
		t.Errorf("limiter let %d bytes through, want the 2 MiB top allocates", lim.bytes.Load())
	}
	if last != 8*mib || total != 8*mib {
		t.Errorf("progress ended at %d/%d, want %d/%d", last, total, 8*mib, 8*mib)
	}
}

func TestCommitCancelled(t *testing.T) {
	fdtest.Check(t)
	_, top, base, _ := chain(t)
	before := read(t, base, 0, 8*mib)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Commit(ctx, top, base, false, Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Commit with a cancelled context: %v", err)
	}
	if !bytes.Equal(read(t, base, 0, 8*mib), before) {
		t.Error("a cancelled commit wrote into the base")
	}
}

// TestCommitErrorTyped: a commit into a node nobody holds for writing
// fails with an engine.Error naming the write, the block layer's error
// beneath.
func TestCommitErrorTyped(t *testing.T) {
	fdtest.Check(t)
	g, top, _, _ := chain(t)
	ro, err := g.Add(block.Options{"driver": "null-co", "size": int64(8 * mib), "read-only": true})
	if err != nil {
		t.Fatal(err)
	}
	err = Commit(context.Background(), top, ro, false, Options{})
	var ee *Error
	if !errors.As(err, &ee) || ee.Op != OpWrite || ee.Off != 0 {
		t.Fatalf("commit into a read-only node: %v (%#v)", err, ee)
	}
	var be *block.Error
	if !errors.As(err, &be) {
		t.Errorf("the block layer's error is not beneath: %v", err)
	}
}

func TestConvert(t *testing.T) {
	fdtest.Check(t)
	for _, workers := range []int{1, 4} {
		for _, inOrder := range []bool{true, false} {
			g, top, _, _ := chain(t)
			want := read(t, top, 0, 8*mib)
			path := filepath.Join(t.TempDir(), "out.raw")
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, 8*mib); err != nil {
				t.Fatal(err)
			}
			dst, err := g.Add(block.Options{"driver": "raw", "file": block.Options{"driver": "file", "filename": path}})
			if err != nil {
				t.Fatal(err)
			}
			w, err := g.Attach("", dst, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			var lim countingLimiter
			var done, total int64
			err = Convert(context.Background(), []*block.Node{top}, dst, ConvertOptions{
				Options: Options{Limiter: &lim, Progress: func(d, tt int64) { done, total = d, tt }},
				Workers: workers, InOrder: inOrder, TargetZero: true, BackingLen: -1,
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(read(t, dst, 0, 8*mib), want) {
				t.Errorf("workers %d in order %v: the copy differs", workers, inOrder)
			}
			if done != total || total != lim.bytes.Load() || total != 5*mib {
				t.Errorf("workers %d: progress %d/%d, limiter %d bytes; want 5 MiB of data extents", workers, done, total, lim.bytes.Load())
			}
			g.Detach(w)
		}
	}
}

func TestConvertCancelled(t *testing.T) {
	fdtest.Check(t)
	g, top, _, _ := chain(t)
	dst, err := g.Add(block.Options{"driver": "null-co", "size": int64(8 * mib)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Attach("", dst, block.Perm{Write: true}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = Convert(ctx, []*block.Node{top}, dst, ConvertOptions{Workers: 2, InOrder: true, BackingLen: -1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Convert with a cancelled context: %v", err)
	}
}

func TestRebase(t *testing.T) {
	fdtest.Check(t)
	g, top, base, _ := chain(t)
	want := read(t, top, 0, 8*mib)
	// Rebase top onto nothing: everything base provided moves into top.
	w, err := g.Attach("", top, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Detach(w)
	var steps, total int64
	if err := Rebase(context.Background(), top, base, nil, nil, Options{Progress: func(d, tt int64) { steps, total = d, tt }}); err != nil {
		t.Fatal(err)
	}
	if err := qcow2.SetBacking(top, "", ""); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(read(t, top, 0, 8*mib), want) {
		t.Error("after the rebase top reads differently")
	}
	if total != 4 || steps == 0 {
		t.Errorf("progress %d steps of %d, want some of 4", steps, total)
	}
}
