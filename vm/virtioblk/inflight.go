package virtioblk

import (
	"sync"
	"sync/atomic"
)

// inflight counts requests started and not completed; Drain waits for none. The count is atomic, the lock only for
// waiters. (A WaitGroup may not be added to while someone waits on it
// at zero, which Serve on another queue may well do during a Drain.)
type inflight struct {
	n       atomic.Int64
	waiters atomic.Int32 // in wait: done need not take mu otherwise
	mu      sync.Mutex
	cond    sync.Cond
}

func (f *inflight) add() { f.n.Add(1) }

func (f *inflight) done() {
	// A waiter counts itself before it looks at n: either it sees n at
	// zero, or this sees it waiting. It checks n under mu, so taking mu
	// here keeps the wake-up from falling between its check and Wait.
	if f.n.Add(-1) == 0 && f.waiters.Load() > 0 {
		f.mu.Lock()
		f.cond.Broadcast()
		f.mu.Unlock()
	}
}

func (f *inflight) wait() {
	f.mu.Lock()
	f.waiters.Add(1)
	for f.n.Load() > 0 {
		f.cond.Wait()
	}
	f.waiters.Add(-1)
	f.mu.Unlock()
}

// Drain waits until every request in flight has completed (pushed to its
// used ring and notified), so that nothing touches guest memory any
// more: for stop, reset, a front end's disconnect (before it unmaps the
// memory). The caller stops calling Serve first, or requests started
// meanwhile are waited for too.
func (d *Device) Drain() { d.inflight.wait() }

// InFlight is the number of requests being served now.
func (d *Device) InFlight() int { return int(d.inflight.n.Load()) }
