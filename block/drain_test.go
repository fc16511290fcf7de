package block_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"minivmm/block"
)

// TestIOWhileReopenDeleteClose runs requests on several goroutines while
// the graph reopens, detaches, deletes and closes under them (run with
// -race): a request either completes or, once its node is closed, fails
// with ErrClosed; nothing else, and no data race.
func TestIOWhileReopenDeleteClose(t *testing.T) {
	g, _ := fixture(t)
	path := image(t, 1<<16)
	// Two file nodes on one image: raw nodes pass on what their users
	// need, and one writer sharing everything keeps no one out (QEMU too).
	mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f","filename":%q}`, path))
	r := mustAdd(t, g, opts(t, `{"driver":"raw","node-name":"r","file":"f"}`))
	mustAdd(t, g, opts(t, `{"driver":"raw","node-name":"r2","file":{"driver":"file","filename":%q}}`, path))
	b, err := g.Attach("", r, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	run := func(n *block.Node, write bool, closedOK bool) {
		defer wg.Done()
		buf := make([]byte, 4096)
		for i := 0; !stop.Load(); i++ {
			var err error
			off := int64(i%16) * 4096
			switch {
			case write && i%3 == 0:
				_, err = n.WriteV([][]byte{buf[:512], buf[512:]}, off, block.WriteFlags(i%2))
			case write && i%3 == 1:
				err = n.Flush()
			default:
				_, err = n.ReadV([][]byte{buf[:100], buf[100:]}, off)
			}
			if err != nil && !(closedOK && errors.Is(err, block.ErrClosed)) {
				errs <- err
				return
			}
			if closedOK && errors.Is(err, block.ErrClosed) {
				return
			}
		}
	}
	// Writers through the backend while r and f are reopened.
	for range 3 {
		wg.Add(1)
		go run(r, true, false)
	}
	for i := range 40 {
		dz := []string{"off", "on"}[i%2]
		if err := g.Reopen([]block.Options{
			opts(t, `{"driver":"raw","node-name":"r","file":"f","detect-zeroes":%q}`, dz),
			opts(t, `{"driver":"file","node-name":"f","filename":%q,"discard":"unmap"}`, path),
		}); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	g.Detach(b)

	// Readers on nodes as they are deleted, and as the graph closes.
	stop.Store(false)
	for _, n := range []*block.Node{r, r, g.Nodes()[0]} {
		wg.Add(1)
		go run(n, false, true)
	}
	if err := g.Delete("r"); err != nil {
		t.Fatal(err)
	}
	if err := g.Delete("f"); err != nil {
		t.Fatal(err)
	}
	g.Close()
	stop.Store(true)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// TestDrainHoldsRequests: a drained node has nothing in flight, holds a
// new request back, and serves it when the section ends; a graph drain
// does the same for every node.
func TestDrainHoldsRequests(t *testing.T) {
	g, _ := fixture(t)
	n := mustAdd(t, g, opts(t, `{"driver":"raw","node-name":"r","file":{"driver":"file","filename":%q}}`, image(t, 4096)))
	for _, drain := range []func() func(){n.Drain, g.Drain} {
		end := drain()
		if n.InFlight() != 0 {
			t.Fatal("requests in flight in a drained section")
		}
		done := make(chan error)
		go func() {
			_, err := n.ReadAt(make([]byte, 512), 0)
			done <- err
		}()
		end()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		end() // ending twice is harmless
	}
}

// TestQuiesceFlushes: stopping the VM (Graph.Quiesce) flushes a node
// with completed writes.
func TestQuiesceFlushes(t *testing.T) {
	drv, flushes := registerProbe(t, nil)
	g, _ := fixture(t)
	n := mustAdd(t, g, opts(t, `{"driver":%q,"node-name":"p","file":{"driver":"file","filename":%q}}`, drv, image(t, 4096)))
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Detach(b)
	if _, err := n.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	if err := g.Quiesce(); err != nil {
		t.Fatal(err)
	}
	if flushes.Load() != 1 {
		t.Fatalf("%d flushes at quiesce, want 1", flushes.Load())
	}
}
