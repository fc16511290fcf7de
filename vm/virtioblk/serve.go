package virtioblk

import (
	"fmt"

	"minivmm/vm/virtq"
)

// Serve takes every request available on q and starts it; each completes
// on its own (the block layer may serve them all at once, from every
// queue), is pushed to q's used ring, and calls notify when the driver
// wants an interrupt. Serve returns once q is empty (with notifications
// re-enabled: call it again on the next kick). An error wraps
// virtq.ErrNeedsReset (and ErrBadRequest for a chain that is no request): the device needs a reset, and
// Serve refuses to run until Reset.
func (d *Device) Serve(q *virtq.Queue, notify func()) error {
	if err := d.Err(); err != nil {
		return err
	}
	for {
		q.DisableNotify()
		for {
			c := new(virtq.Chain)
			ok, err := q.PopInto(c)
			if err != nil {
				q.EnableNotify()
				return d.fail(err)
			}
			if !ok {
				break
			}
			r, err := parseRequest(c)
			if err != nil {
				q.EnableNotify()
				return d.fail(fmt.Errorf("%w (%w)", err, virtq.ErrNeedsReset))
			}
			d.inflight.add()
			go d.complete(q, &r, notify)
		}
		if !q.EnableNotify() {
			return nil
		}
	}
}

// complete runs a request and returns it to the driver.
func (d *Device) complete(q *virtq.Queue, r *request, notify func()) {
	defer d.inflight.done()
	*r.status = d.execute(r)
	if q.Push(r.head, r.inLen) && notify != nil {
		notify()
	}
}
