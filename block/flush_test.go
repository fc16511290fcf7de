package block_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
)

// probeImage is a format over its file child whose requests a test
// watches and holds: its hooks come from the test that registered it.
type probeImage struct {
	file        *block.Node
	beforeWrite func() // called inside every WriteAt, before the write
	flushes     *atomic.Int32
}

func (p *probeImage) ReadAt(b []byte, off int64) (int, error) { return p.file.ReadAt(b, off) }
func (p *probeImage) WriteAt(b []byte, off int64) (int, error) {
	if p.beforeWrite != nil {
		p.beforeWrite()
	}
	return p.file.WriteAt(b, off)
}
func (p *probeImage) Flush() error {
	p.flushes.Add(1)
	return p.file.Flush()
}
func (p *probeImage) Length() (int64, error) { return p.file.Length(), nil }
func (p *probeImage) Close() error           { return nil }

// registerProbe registers a probe format under a name of this test's own
// (registration is for the process's life: each test needs its own).
func registerProbe(t *testing.T, beforeWrite func()) (name string, flushes *atomic.Int32) {
	// A name no run of this test (-count) has taken yet.
	for i := 0; ; i++ {
		name = fmt.Sprintf("probe-%s-%d", t.Name(), i)
		if _, taken := block.LookupDriver(name); !taken {
			break
		}
	}
	flushes = new(atomic.Int32)
	block.Register(&block.Driver{
		Name:   name,
		Format: true,
		Open: func(o *block.OpenContext) (block.Image, error) {
			return &probeImage{file: o.Child("file"), beforeWrite: beforeWrite, flushes: flushes}, nil
		},
	})
	return name, flushes
}

// TestFlushCoversWriteCompletedDuringIt: a write in flight when a flush
// starts is not covered by it; the next flush must reach the driver (it
// used to be skipped: the write was counted when it began).
func TestFlushCoversWriteCompletedDuringIt(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	drv, flushes := registerProbe(t, func() {
		once.Do(func() {
			close(entered)
			<-release
		})
	})
	g, _ := fixture(t)
	n, err := g.Add(opts(t, `{"driver":%q,"file":{"driver":"file","filename":%q}}`, drv, image(t, 4096)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Detach(b)
	done := make(chan error)
	go func() {
		_, err := n.WriteAt(make([]byte, 512), 0)
		done <- err
	}()
	<-entered // the write is in flight
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	before := flushes.Load()
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	if flushes.Load() != before+1 {
		t.Fatalf("the flush after a write completed did not reach the driver (%d flushes, then %d)", before, flushes.Load())
	}
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	if flushes.Load() != before+1 {
		t.Fatalf("a flush with nothing written since the last reached the driver")
	}
}

// TestLastWriterLeavingFlushes: when the last writer of an auto-read-only
// node leaves, the node loses write access and is flushed first (it used
// not to be: the writer count was dropped before the reopen looked).
func TestLastWriterLeavingFlushes(t *testing.T) {
	drv, flushes := registerProbe(t, nil)
	g, _ := fixture(t)
	n, err := g.Add(opts(t, `{"driver":%q,"auto-read-only":true,"file":{"driver":"file","filename":%q}}`, drv, image(t, 4096)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	g.Detach(b)
	if flushes.Load() != 1 {
		t.Fatalf("%d flushes when the last writer left, want 1", flushes.Load())
	}
}

// failingFlush is a format over its file child whose flushes fail.
type failingFlush struct{ *probeImage }

func (failingFlush) Flush() error { return unix.EIO }

// TestReopenFlushFailureChangesNothing: a node losing write access whose
// flush fails stays as it was, and the error is QEMU's.
func TestReopenFlushFailureChangesNothing(t *testing.T) {
	name := "failflush-" + t.Name()
	for i := 0; ; i++ {
		if _, taken := block.LookupDriver(fmt.Sprintf("%s-%d", name, i)); !taken {
			name = fmt.Sprintf("%s-%d", name, i)
			break
		}
	}
	block.Register(&block.Driver{Name: name, Format: true, Open: func(o *block.OpenContext) (block.Image, error) {
		return failingFlush{&probeImage{file: o.Child("file"), flushes: new(atomic.Int32)}}, nil
	}})
	g, _ := fixture(t)
	n := mustAdd(t, g, opts(t, `{"driver":%q,"node-name":"x","file":{"driver":"file","filename":%q}}`, name, image(t, 4096)))
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	g.Detach(b)
	err = g.Reopen([]block.Options{opts(t, `{"driver":%q,"node-name":"x","file":{"driver":"file","filename":%q},"read-only":true}`, name, n.Child("file").Filename())})
	if err == nil || err.Error() != "Error flushing drive: Input/output error" || !errors.Is(err, unix.EIO) {
		t.Fatalf("reopen read-only with a failing flush: %v", err)
	}
	if n.ReadOnly() {
		t.Fatal("the failed reopen made the node read-only")
	}
}
