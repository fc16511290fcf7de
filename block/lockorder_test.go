package block_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"minivmm/block"
)

// deadlockAfter ends the test binary with every goroutine's stack if
// done is not closed within d: a deadlock is reported, not waited out
// (t.Fatal would not do: the graph's cleanup would wait on the same
// locks, and the report with it).
func deadlockAfter(t *testing.T, d time.Duration, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		fmt.Fprintf(os.Stderr, "%s: deadlock: not done after %v\n%s\n", t.Name(), d, buf)
		os.Exit(2) // not panic: the test's cleanups would run first, and hang

	}
}

// TestHoldThenSnapshotDoesNotDeadlock is the interleaving the mirror's
// switch used to deadlock in: a Hold has the backend's io lock, a
// snapshot of that backend's node comes (it took the graph lock, then
// waited for the io lock), then the holder's Replace (which waited for
// the graph lock). The snapshot is now refused, as QEMU's op blockers
// refuse a snapshot of a node under a mirror, and the switch goes on.
func TestHoldThenSnapshotDoesNotDeadlock(t *testing.T) {
	needQEMUTools(t)
	g, _ := fixture(t)
	dir := t.TempDir()
	for _, name := range []string{"top", "tgt", "ov"} {
		qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, name+".qcow2"), "1M")
	}
	top := mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":%q}}`, filepath.Join(dir, "top.qcow2")))
	tgt := mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"tgt","file":{"driver":"file","filename":%q}}`, filepath.Join(dir, "tgt.qcow2")))
	mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"ov","backing":null,"file":{"driver":"file","filename":%q}}`, filepath.Join(dir, "ov.qcow2")))
	d0, err := g.Attach("d0", top, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	job, err := g.Attach("", tgt, block.Perm{Write: true, ShareWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		release := g.Hold(top)
		snap := make(chan error, 1)
		go func() { snap <- g.Snapshot([]block.SnapshotAction{{Node: "d0", Overlay: "ov"}}) }()
		// The snapshot either ran into the hold or is still on its way;
		// either way the switch must not wait for it.
		time.Sleep(20 * time.Millisecond)
		if err := g.Replace(top, tgt, job); err != nil {
			t.Error(err)
		}
		release()
		if err := <-snap; err == nil {
			// It came after the release: a snapshot of tgt, d0's node now.
			if d0.Node().Name() != "ov" {
				t.Errorf("after the snapshot d0 is on %s", d0.Node().Name())
			}
		} else if want := "Node 'tgt' is busy: block device is in use by block job: mirror"; err.Error() != want && err.Error() != "Node 'top' is busy: block device is in use by block job: mirror" {
			t.Errorf("snapshot during a hold: %v", err)
		}
	}()
	deadlockAfter(t, 10*time.Second, done)
	g.Detach(d0)
}

// TestSwitchesConcurrently runs, on one chain while a writer writes
// through its backend, a mirror's switch (Hold, Replace, release), a
// snapshot, a backend's detach, blockdev-del, blockdev-reopen and a
// second Hold, all at once, many times; any deadlock fails the test with
// every goroutine's stack. Each operation may be refused (the node held,
// in use, moved already), but none may hang, and the backend ends on a
// node that reads what it wrote.
func TestSwitchesConcurrently(t *testing.T) {
	needQEMUTools(t)
	tmpl := t.TempDir()
	for _, name := range []string{"top", "tgt", "ov"} {
		qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(tmpl, name+".qcow2"), "1M")
	}
	iterations := 40
	if testing.Short() {
		iterations = 5
	}
	for i := 0; i < iterations; i++ {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			switchesOnce(t, tmpl)
		})
		if t.Failed() {
			return
		}
	}
}

func switchesOnce(t *testing.T, tmpl string) {
	g, _ := fixture(t)
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name+".qcow2") }
	for _, name := range []string{"top", "tgt", "ov"} {
		b, err := os.ReadFile(filepath.Join(tmpl, name+".qcow2"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path(name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	spare := image(t, 1<<16)
	top := mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":%q}}`, path("top")))
	tgt := mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"tgt","file":{"driver":"file","node-name":"tgtf","filename":%q}}`, path("tgt")))
	mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"ov","backing":null,"file":{"driver":"file","filename":%q}}`, path("ov")))
	mustAdd(t, g, opts(t, `{"driver":"file","node-name":"spare","filename":%q,"auto-read-only":true}`, spare))
	d0, err := g.Attach("d0", top, block.Perm{Write: true, ShareWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	d1, err := g.Attach("d1", top, block.Perm{Write: true, ShareWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	job, err := g.Attach("", tgt, block.Perm{Write: true, ShareWrite: true})
	if err != nil {
		t.Fatal(err)
	}

	// The writer: the same bytes again and again at one offset.
	stop := make(chan struct{})
	var writes atomic.Int64
	var writer sync.WaitGroup
	writer.Add(1)
	go func() {
		defer writer.Done()
		buf := []byte("the guest's data")
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := d0.WriteAt(buf, 4096); err != nil {
				t.Errorf("write through d0: %v", err)
				return
			}
			writes.Add(1)
		}
	}()

	start := make(chan struct{})
	var ops sync.WaitGroup
	op := func(f func()) {
		ops.Add(1)
		go func() {
			defer ops.Done()
			<-start
			f()
		}()
	}
	refused := func(what string, err error) {
		// Refusals are fine; the point is that nothing hangs.
		if err != nil && testing.Verbose() {
			t.Logf("%s: %v", what, err)
		}
	}
	op(func() { // a mirror's switch
		release := g.Hold(top)
		refused("replace", g.Replace(top, tgt, job))
		release()
	})
	op(func() { // a second job's switch, of the target
		release := g.Hold(tgt)
		runtime.Gosched()
		release()
	})
	op(func() { refused("snapshot", g.Snapshot([]block.SnapshotAction{{Node: "d0", Overlay: "ov"}})) })
	op(func() { refused("detach", g.Detach(d1)) })
	op(func() { refused("blockdev-del spare", g.Delete("spare")) })
	op(func() { refused("blockdev-del top", g.Delete("top")) })
	op(func() {
		refused("reopen", g.Reopen([]block.Options{opts(t, `{"driver":"qcow2","node-name":"tgt","file":"tgtf"}`)}))
	})
	op(func() { // a new parent for top
		_, err := g.Add(opts(t, `{"driver":"raw","node-name":"p","read-only":true,"file":"top"}`))
		refused("add a parent", err)
	})
	done := make(chan struct{})
	go func() {
		time.Sleep(time.Millisecond) // let the writer in
		close(start)
		ops.Wait()
		close(stop)
		writer.Wait()
		close(done)
	}()
	deadlockAfter(t, 20*time.Second, done)

	// d0 ended on top, tgt or the overlay, and reads what it wrote.
	switch name := d0.Node().Name(); name {
	case "top", "tgt", "ov":
	default:
		t.Fatalf("d0 on %s", name)
	}
	got := make([]byte, 16)
	if _, err := d0.ReadAt(got, 4096); err != nil || string(got) != "the guest's data" && writes.Load() > 0 {
		t.Fatalf("d0 reads %q (%v) after %d writes", got, err, writes.Load())
	}
	if err := g.Detach(d0); err != nil && !errors.Is(err, block.ErrClosed) {
		t.Fatal(err)
	}
}
