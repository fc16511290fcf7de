package virtioblk

import (
	"sync"
	"sync/atomic"
)

// inflight counts requests started and not completed, and Serve calls
// running; Drain waits for none of either. The counts are atomic, the
// lock only for waiters. (A WaitGroup may not be added to while someone
// waits on it at zero, which Serve on another queue may well do during a
// Drain.)
type inflight struct {
	n       atomic.Int64 // requests
	serving atomic.Int64 // Serve calls
	waiters atomic.Int32 // in wait: done need not take mu otherwise
	mu      sync.Mutex
	cond    sync.Cond
}

func (f *inflight) add()       { f.n.Add(1) }
func (f *inflight) done()      { f.end(&f.n) }
func (f *inflight) enter()     { f.serving.Add(1) }
func (f *inflight) leave()     { f.end(&f.serving) }
func (f *inflight) idle() bool { return f.n.Load() == 0 && f.serving.Load() == 0 }

func (f *inflight) end(c *atomic.Int64) {
	// A waiter counts itself before it looks at the counts: either it
	// sees them at zero, or this sees it waiting. It looks under mu, so
	// taking mu here keeps the wake-up from falling between its look
	// and its Wait.
	if c.Add(-1) == 0 && f.waiters.Load() > 0 {
		f.mu.Lock()
		f.cond.Broadcast()
		f.mu.Unlock()
	}
}

func (f *inflight) wait() {
	f.mu.Lock()
	f.waiters.Add(1)
	for !f.idle() {
		f.cond.Wait()
	}
	f.waiters.Add(-1)
	f.mu.Unlock()
}

// Drain waits until every request in flight has completed (pushed to its
// used ring and notified), and every Serve running has returned, so that
// nothing touches guest memory any more: for stop, reset, a front end's
// disconnect (before it unmaps the memory). The caller stops calling
// Serve first, or requests started meanwhile are waited for too.
func (d *Device) Drain() { d.inflight.wait() }

// InFlight is the number of requests being served now.
func (d *Device) InFlight() int { return int(d.inflight.n.Load()) }

// Stop makes the device take no more requests: a Serve running now
// returns before its next one (leaving the rest in the ring), later ones
// return at once; then Stop waits for the requests in flight, as Drain.
// It is the stop that holds against a driver that never stops adding
// requests (even through the device's own writes into its rings, which
// can keep one Serve taking requests for ever), where a transport that
// only stops calling Serve would wait for the Serve running. Start lets
// Serve take requests again; the transport then calls Serve on every
// queue, since the requests left behind bring no kick of their own
// (QEMU's drained_end kicks its queues the same way).
func (d *Device) Stop() {
	d.stopped.Store(true)
	d.Drain()
}

// Start undoes Stop.
func (d *Device) Start() { d.stopped.Store(false) }
