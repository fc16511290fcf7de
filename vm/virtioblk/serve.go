package virtioblk

import (
	"fmt"

	"minivmm/vm/virtq"
)

// Serve serves every request available on q. While more wait behind the
// one it takes, it hands that one to a goroutine of its own, which then
// goes on taking requests as it finishes them (and starts another when it
// leaves some waiting); the last one, with nothing behind it, Serve
// serves itself. So every request available is in flight at once (the
// block layer serves them in parallel, from every queue), and a request
// costs a hand-off between goroutines only where parallelism grows: a
// lone request (depth 1) is served on the caller's goroutine. Each
// completed request is pushed to q's used ring, and notify is called
// when the driver wants an interrupt.
//
// Serve returns when it finds q empty (it blocks for a request's time:
// call it from the queue's kick handler); the goroutines it started may
// still be serving: Drain waits for them. Notifications stay enabled
// (EVENT_IDX's avail_event follows every pop, as libvhost-user's): the
// driver kicks whenever it adds to a queue the device has emptied.
//
// An error wraps virtq.ErrNeedsReset (and ErrBadRequest for a chain that
// is no request): the device needs a reset, and Serve refuses to run
// until Reset. Config.OnNeedsReset hears of it too, also where a
// goroutine Serve started met it.
func (d *Device) Serve(q *virtq.Queue, notify func()) error {
	if err := d.Err(); err != nil {
		return err
	}
	for {
		r, err := d.pop(q)
		if r == nil {
			return err
		}
		if !q.Pending() {
			// The last one: served here, with no hand-off.
			d.complete(q, r, notify)
			continue
		}
		// More wait: r goes to a goroutine of its own, which then
		// takes requests too, and this one goes on dispatching.
		d.inflight.add()
		go d.helper(q, r, notify)
	}
}

// pop takes the next request of q and counts it in flight; nil when q is
// empty or broken (then with the error).
func (d *Device) pop(q *virtq.Queue) (*request, error) {
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

// helper serves r, then takes and serves requests while there are any,
// starting another helper when it leaves some waiting. It counts as in
// flight itself: Drain must not return (and guest memory be unmapped)
// while it may still pop.
func (d *Device) helper(q *virtq.Queue, r *request, notify func()) {
	defer d.inflight.done()
	if r == nil {
		r, _ = d.pop(q)
	}
	for r != nil {
		d.complete(q, r, notify)
		r, _ = d.pop(q)
		if r != nil && q.Pending() {
			d.inflight.add()
			go d.helper(q, nil, notify)
		}
	}
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
