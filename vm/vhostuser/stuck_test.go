package vhostuser

import (
	"sync"
	"testing"
	"time"

	"minivmm/internal/fdtest"
)

// stuckDevice's queues serve a driver that never lets them finish: a Kick
// returns only once the device is stopped (virtioblk's Serve against a
// ring the driver, or the device's own completions, keep refilling).
type stuckDevice struct {
	fakeDevice
	mu      sync.Mutex
	stopped chan struct{}
	kicking sync.WaitGroup
}

func newStuckDevice() *stuckDevice { return &stuckDevice{stopped: make(chan struct{})} }

func (d *stuckDevice) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.stopped:
	default:
		close(d.stopped)
	}
}

func (d *stuckDevice) Start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.stopped:
		d.stopped = make(chan struct{})
	default:
	}
}

func (d *stuckDevice) StartQueue(c QueueConfig) (Queue, error) {
	return &stuckQueue{d: d, base: c.Base}, nil
}

type stuckQueue struct {
	d    *stuckDevice
	base uint16
}

func (q *stuckQueue) Kick() {
	q.d.mu.Lock()
	stopped := q.d.stopped
	q.d.mu.Unlock()
	<-stopped
}

func (q *stuckQueue) Stop() uint16 { return q.base }

// TestStuckQueueStops: GET_VRING_BASE, and a disconnect, end a queue whose
// kick handler would otherwise serve for ever; the next front end is
// served and nothing stays open.
func TestStuckQueueStops(t *testing.T) {
	fdtest.Check(t)
	dev := newStuckDevice()
	_, path := listen(t, dev)
	for _, how := range []string{"get-vring-base", "disable", "disconnect"} {
		t.Run(how, func(t *testing.T) {
			before := fdtest.Count()
			c := dial(t, path)
			defer c.close()
			handshake(t, c)
			memTable(t, c)
			setupRing(t, c, 0, eventfd(t), eventfd(t))
			c.acked(SetVringEnable, VringState{0, 1}.encode())
			time.Sleep(20 * time.Millisecond) // the kick handler is stuck now
			done := make(chan struct{})
			go func() {
				defer close(done)
				switch how {
				case "get-vring-base":
					c.call(GetVringBase, VringState{0, 0}.encode())
				case "disable":
					c.acked(SetVringEnable, VringState{0, 0}.encode())
				}
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the session did not stop the queue")
			}
			c.close()
			waitCount(t, before, "after the front end went away")
		})
	}
	c := dial(t, path)
	defer c.close()
	handshake(t, c)
}
