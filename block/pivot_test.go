package block_test

import (
	"bytes"
	"testing"
	"time"

	"minivmm/block"
)

// TestReplace: under a hold, Replace moves a writing backend (taking the
// handover's permission on the target) and a parent's child onto the
// target; the target's writer count never changes, the source keeps
// none, a handover that does not write the target is ignored, and a
// second writer on a target that does not share is refused with nothing
// moved.
func TestReplace(t *testing.T) {
	g, _ := fixture(t)
	imgA, imgB := image(t, 1<<16), image(t, 1<<16)
	fa := mustAdd(t, g, opts(t, `{"driver":"file","node-name":"fa","filename":%q}`, imgA))
	fb := mustAdd(t, g, opts(t, `{"driver":"file","node-name":"fb","filename":%q}`, imgB))
	p := mustAdd(t, g, opts(t, `{"driver":"raw","node-name":"p","read-only":true,"file":"fa"}`))
	d, err := g.Attach("d", fa, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	job, err := g.Attach("", fb, block.Perm{Write: true, ShareWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	other, err := g.Attach("", fb, block.Perm{Write: true, ShareWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	release := g.Hold(fa)
	if err := g.Replace(fa, fb, job); err == nil {
		t.Fatal("a non-sharing writer joined a target written by another")
	}
	if d.Node() != fa || fa.Writers() != 1 || fb.Writers() != 2 || p.Child("file") != fa {
		t.Fatalf("a refused Replace changed something: d on %s, writers %d/%d", d.Node().Name(), fa.Writers(), fb.Writers())
	}
	g.Detach(other)
	if err := g.Replace(fa, fb, job); err != nil {
		t.Fatal(err)
	}
	release()
	if d.Node() != fb || p.Child("file") != fb {
		t.Fatalf("after Replace: d on %s, p's file %s", d.Node().Name(), p.Child("file").Name())
	}
	if fa.Writers() != 0 || fb.Writers() != 1 {
		t.Fatalf("writers after Replace: source %d, target %d", fa.Writers(), fb.Writers())
	}
	if _, err := d.WriteAt([]byte("moved"), 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := fb.ReadAt(got, 0); err != nil || !bytes.Equal(got, []byte("moved")) {
		t.Fatalf("the backend's write did not reach the target: %q %v", got, err)
	}
	// The job's handover is gone from the target: detaching it is a no-op.
	g.Detach(job)
	if fb.Writers() != 1 {
		t.Fatalf("detaching a handed-over backend dropped a writer: %d", fb.Writers())
	}
	g.Detach(d)
}

// TestHoldHoldsBackendRequests: while a node is held, its backend's
// requests wait, and go on once released.
func TestHoldHoldsBackendRequests(t *testing.T) {
	g, _ := fixture(t)
	n := mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f","filename":%q}`, image(t, 1<<16)))
	d, err := g.Attach("d", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Detach(d)
	release := g.Hold(n)
	done := make(chan struct{})
	go func() {
		d.WriteAt([]byte{1}, 0)
		close(done)
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("a backend write went through a held node")
	default:
	}
	release()
	<-done
}
