package aio_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"minivmm/block"
	"minivmm/block/aio"
	_ "minivmm/block/drivers"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

func node(t *testing.T) *block.Node {
	t.Helper()
	fdtest.Check(t)
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	t.Cleanup(func() { g.Close(); reg.CloseAll() })
	n, err := g.Add(block.Options{"driver": "raw", "file": block.Options{"driver": "file", "filename": p}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Attach("", n, block.Perm{Write: true}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPool: writes, a flush and reads submitted 64 at a time to 8
// workers each complete once, with their tag, and the data is right.
func TestPool(t *testing.T) {
	n := node(t)
	done := make(chan aio.Completion, 64)
	p := aio.NewPool(n, 8, done)
	const reqs = 64
	collect := func() map[uint64]aio.Completion {
		got := map[uint64]aio.Completion{}
		for range reqs {
			c := <-done
			if _, dup := got[c.Tag]; dup {
				t.Fatalf("tag %d completed twice", c.Tag)
			}
			got[c.Tag] = c
		}
		return got
	}
	go func() {
		for i := range reqs {
			b := bytes.Repeat([]byte{byte(i)}, 4096)
			if err := p.Submit(aio.Request{Op: aio.Write, Bufs: [][]byte{b[:1000], b[1000:]}, Off: int64(i) * 4096, Flags: block.WriteFlags(i % 2), Tag: uint64(i)}); err != nil {
				t.Error(err)
			}
		}
	}()
	for tag, c := range collect() {
		if c.Err != nil || c.N != 4096 {
			t.Fatalf("write %d: %d, %v", tag, c.N, c.Err)
		}
	}
	if err := p.Submit(aio.Request{Op: aio.Flush, Tag: 999}); err != nil {
		t.Fatal(err)
	}
	if c := <-done; c.Tag != 999 || c.Err != nil {
		t.Fatalf("flush: %+v", c)
	}
	bufs := make([][]byte, reqs)
	go func() {
		for i := range reqs {
			bufs[i] = make([]byte, 4096)
			if err := p.Submit(aio.Request{Op: aio.Read, Bufs: [][]byte{bufs[i]}, Off: int64(i) * 4096, Tag: uint64(i)}); err != nil {
				t.Error(err)
			}
		}
	}()
	for tag, c := range collect() {
		if c.Err != nil || !bytes.Equal(bufs[tag], bytes.Repeat([]byte{byte(tag)}, 4096)) {
			t.Fatalf("read %d: %v", tag, c.Err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Submit(aio.Request{Op: aio.Read}); !errors.Is(err, aio.ErrClosed) {
		t.Fatalf("submit after close: %v", err)
	}
}
