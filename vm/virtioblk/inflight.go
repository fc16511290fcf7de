package virtioblk

import "sync"

// inflight counts requests started and not completed; Drain waits for
// none. (A WaitGroup may not be added to while someone waits on it at
// zero, which Serve on another queue may well do during a Drain.)
type inflight struct {
	mu   sync.Mutex
	cond sync.Cond
	n    int
}

func (f *inflight) add() {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

func (f *inflight) done() {
	f.mu.Lock()
	f.n--
	if f.n == 0 {
		f.cond.Broadcast()
	}
	f.mu.Unlock()
}

func (f *inflight) wait() {
	f.mu.Lock()
	for f.n > 0 {
		f.cond.Wait()
	}
	f.mu.Unlock()
}

func (f *inflight) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// Drain waits until every request in flight has completed (pushed to its
// used ring and notified) and every goroutine Serve started has ended,
// so that nothing touches guest memory any more: for stop, reset, a
// front end's disconnect (before it unmaps the memory). The caller stops
// calling Serve first, or requests started meanwhile are waited for too.
func (d *Device) Drain() { d.inflight.wait() }

// InFlight is the number of requests being served now, and of the
// goroutines serving them.
func (d *Device) InFlight() int { return d.inflight.count() }
