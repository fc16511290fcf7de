package jobs

import (
	"bytes"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"minivmm/block/engine"
	"minivmm/internal/fdtest"
)

// TestDrainPausesJob: an active commit with a guest writing all along,
// on a graph whose drains the manager observes. A drained section over
// the job's nodes takes a ready job to standby and back (one pair per
// section, in order, before the section's holder goes on); one over
// other nodes, or over a user-paused job, shows nothing. Drains hammered
// from other goroutines while the job copies, becomes ready and
// switches never leave it stuck or break QEMU's state machine (an
// invalid transition panics), and the guest's data is intact.
func TestDrainPausesJob(t *testing.T) {
	fdtest.Check(t)
	c := newChain(t, "")
	other, _ := newMirrorTarget(t, c)
	r := newRecorder()
	m := NewManager(r.emit)
	c.g.ObserveDrains(m.DrainObserver())
	defer c.g.ObserveDrains(nil)
	guest := startGuest(t, c.w, readAll(t, c.top), 11)
	if err := c.g.SetReadOnly(c.base, false); err != nil {
		t.Fatal(err)
	}
	j, err := m.Start(Spec{ID: "c", Type: "commit", AutoFinalize: true, AutoDismiss: true, Nodes: []string{"top", "mid", "base"}},
		&Mirror{Graph: c.g, Source: c.top, Target: c.base, Base: c.base, Sync: engine.SyncFull, BaseWasRO: true})
	if err != nil {
		t.Fatal(err)
	}
	// Drains from elsewhere while the job copies.
	var stop atomic.Bool
	var wg sync.WaitGroup
	for _, drain := range []func() func(){c.top.Drain, c.mid.Drain, c.g.Drain, other.Drain} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				end := drain()
				time.Sleep(100 * time.Microsecond)
				end()
				time.Sleep(time.Millisecond) // let the job run between sections

			}
		}()
	}
	r.waitFor(t, "BLOCK_JOB_READY")
	stop.Store(true)
	wg.Wait()
	if s := j.Status(); s != Ready {
		t.Fatalf("after the drains, the job is %s", s)
	}

	tail := func(from int) string { return strings.Join(r.list()[from:], ",") }
	n := len(r.list())
	c.mid.Drain()()
	if got := tail(n); got != "JOB_STATUS_CHANGE standby,JOB_STATUS_CHANGE ready" {
		t.Errorf("a drain of mid: %s", got)
	}
	n = len(r.list())
	end := c.top.Drain()
	if got := tail(n); got != "JOB_STATUS_CHANGE standby" || j.Status() != Standby {
		t.Errorf("in a drained section over top: %s, job %s", got, j.Status())
	}
	end()
	if got := tail(n); got != "JOB_STATUS_CHANGE standby,JOB_STATUS_CHANGE ready" {
		t.Errorf("after it: %s", got)
	}
	n = len(r.list())
	other.Drain()()
	if got := tail(n); got != "" {
		t.Errorf("a drain of a node the job does not hold: %s", got)
	}
	if err := j.Pause(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, j, Standby)
	n = len(r.list())
	c.top.Drain()()
	if got := tail(n); got != "" {
		t.Errorf("a drain of a paused job: %s", got)
	}
	if err := j.Resume(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, j, Ready)

	if err := j.Complete(); err != nil {
		t.Fatal(err)
	}
	waitJob(t, j)
	want := guest.finish()
	if !bytes.Equal(readAll(t, c.base), want) {
		t.Error("base differs from the guest's view after the switch")
	}
	// Every pause went back: the state machine allowed each step (it
	// panics otherwise), and the job ended completed.
	ev := r.list()
	if !slices.Contains(ev, "BLOCK_JOB_COMPLETED") || slices.Contains(ev, "BLOCK_JOB_CANCELLED") {
		t.Errorf("events %v", ev)
	}
	c.g.Detach(c.w)
}

// waitStatus waits until j is in status s (a user pause takes effect at
// the job's next pause point).
func waitStatus(t *testing.T, j *Job, s Status) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for j.Status() != s {
		if time.Now().After(deadline) {
			t.Fatalf("job in %s, want %s", j.Status(), s)
		}
		time.Sleep(time.Millisecond)
	}
}
