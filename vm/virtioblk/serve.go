package virtioblk

import (
	"fmt"

	"minivmm/vm/virtq"
)

// Serve takes every request available on q and serves them all at once:
// each but the last on a goroutine of its own (the block layer serves
// them in parallel, from every queue), the last on the caller's
// goroutine, so that a lone request (depth 1) costs no hand-off between
// goroutines. Each completed request is pushed to q's used ring, and
// notify is called when the driver wants an interrupt.
//
// Serve returns once q is empty and its own request is served (it blocks
// for a request's time: call it from the queue's kick handler); requests
// on other goroutines may still be in flight: Drain waits for them. Only
// Serve takes requests from q, so a transport that stops calling it
// (stop, reset, GET_VRING_BASE) stops the device: nothing is popped
// behind its back, and Drain is bounded by the requests in flight and
// the Serve running (which Stop ends, however busy the driver keeps it).
// While Serve takes requests the driver is asked not to kick; after,
// notifications are on (with EVENT_IDX, avail_event is the next entry):
// a request added while Serve serves its own brings a kick, and with it
// the next Serve.
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
	var last *request
	defer func() {
		if last != nil {
			d.complete(q, last, notify)
		}
	}()
	for {
		q.DisableNotify()
		for {
			r, err := d.pop(q)
			if err != nil {
				q.EnableNotify()
				return err
			}
			if r == nil {
				break
			}
			if last != nil {
				go d.complete(q, last, notify)
			}
			last = r
		}
		if !q.EnableNotify() || d.stopped.Load() {
			return nil
		}
	}
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
