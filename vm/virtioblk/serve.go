package virtioblk

import (
	"fmt"
	"sync/atomic"

	"minivmm/vm/virtq"
)

// Serve takes every request available on q and serves them all at once.
// The requests one pass over the ring takes are a batch: the caller's
// goroutine serves them one after the other, and whoever takes a request
// from the batch first starts a helper goroutine if some are left, which
// does the same. Requests the block layer serves at once (the page
// cache) are thus served by one or two goroutines with no hand-off each;
// a request that blocks leaves a helper behind it to take the next, so
// that requests which block are all in flight together, as many as the
// driver made available. Each completed request is pushed to q's used
// ring, and notify is called when the driver wants an interrupt.
//
// Serve returns once q is empty and its own requests are served (it
// blocks for a request's time at least: call it from the queue's kick
// handler); requests on helpers may still be in flight: Drain waits for
// them. Only Serve takes requests from q, so a transport that stops
// calling it (stop, reset, GET_VRING_BASE) stops the device: nothing is
// popped behind its back, and Drain is bounded by the requests in flight
// and the Serve running (which Stop ends, however busy the driver keeps
// it). While Serve takes requests the driver is asked not to kick;
// after, notifications are on (with EVENT_IDX, avail_event is the next
// entry): a request added while Serve serves its own brings a kick, and
// with it the next Serve.
//
// An error wraps virtq.ErrNeedsReset (and ErrBadRequest for a chain that
// is no request): the device needs a reset, and Serve refuses to run
// until Reset; the requests taken before the bad one are served all the
// same. Config.OnNeedsReset hears of it too.
func (d *Device) Serve(q *virtq.Queue, notify func()) error {
	if err := d.Err(); err != nil {
		return err
	}
	d.inflight.enter()
	defer d.inflight.leave()
	for {
		q.DisableNotify()
		b := &batch{d: d, q: q, notify: notify}
		var err error
		for {
			var r *request
			r, err = d.pop(q)
			if err != nil || r == nil {
				break
			}
			b.reqs = append(b.reqs, r)
		}
		if err != nil {
			q.EnableNotify()
			b.work()
			return err
		}
		if len(b.reqs) > 0 {
			b.work()
			continue // what the driver added meanwhile
		}
		if !q.EnableNotify() || d.stopped.Load() {
			return nil
		}
	}
}

// batch is the requests one pass over a ring took, served by the Serve
// that took them and the helpers it (or they) started.
type batch struct {
	d      *Device
	q      *virtq.Queue
	notify func()
	reqs   []*request // fixed before work starts
	next   atomic.Int32
	// spare: a helper was started and has not taken a request yet, so
	// no other need start.
	spare atomic.Bool
}

// work serves requests of the batch until none is left to take.
func (b *batch) work() {
	for {
		i := int(b.next.Add(1)) - 1
		if i >= len(b.reqs) {
			return
		}
		if i+1 < len(b.reqs) && b.spare.CompareAndSwap(false, true) {
			go b.help()
		}
		b.d.complete(b.q, b.reqs[i], b.notify)
	}
}

func (b *batch) help() {
	b.spare.Store(false)
	b.work()
}

// pop takes the next request of q and counts it in flight; nil when q is
// empty or broken (then with the error), or the device stopped.
func (d *Device) pop(q *virtq.Queue) (*request, error) {
	if d.stopped.Load() {
		return nil, nil
	}
	r := d.reqs.Get().(*request)
	ok, err := q.PopInto(&r.chain)
	if err == nil && ok {
		if err = r.parse(); err != nil {
			err = fmt.Errorf("%w (%w)", err, virtq.ErrNeedsReset)
		}
	}
	if err != nil || !ok {
		d.reqs.Put(r.reset())
		if err != nil {
			return nil, d.fail(err)
		}
		return nil, nil
	}
	d.inflight.add()
	return r, nil
}

// complete runs a request and returns it to the driver.
func (d *Device) complete(q *virtq.Queue, r *request, notify func()) {
	*r.status = d.execute(r)
	head, n := r.chain.Head, r.inLen
	d.reqs.Put(r.reset())
	if q.Push(head, n) && notify != nil {
		notify()
	}
	d.inflight.done()
}

func newRequest() any {
	return &request{chain: virtq.Chain{Out: make([][]byte, 0, 4), In: make([][]byte, 0, 4)}}
}
