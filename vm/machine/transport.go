package machine

import (
	"fmt"
	"sync"

	"minivmm/vm/blkdriver"
	"minivmm/vm/guestmem"
	"minivmm/vm/virtioblk"
	"minivmm/vm/virtq"
)

// transport connects the built-in guest's driver to a device model in
// the same process, as a virtio-pci transport would connect a guest to
// QEMU's device: Kick is the doorbell (an ioeventfd), each queue has an
// IO goroutine that serves it (QEMU's IOThread), and the device's
// notifications arrive on a channel per queue (an irqfd).
type transport struct {
	model     *virtioblk.Device
	mem       *guestmem.Memory
	numQueues int
	queueSize int
	// io is held shared while a queue is served; the machine takes it
	// to stop the device from taking new requests (stop).
	io *sync.RWMutex

	mu       sync.Mutex
	features uint64
	queues   []*virtq.Queue
	kicks    []chan struct{}
	irqs     []chan struct{}
	stop     chan struct{}
	wg       sync.WaitGroup
	err      error // what broke the device
}

var _ blkdriver.Transport = (*transport)(nil)

func newTransport(model *virtioblk.Device, mem *guestmem.Memory, numQueues, queueSize int, io *sync.RWMutex) *transport {
	t := &transport{model: model, mem: mem, numQueues: numQueues, queueSize: queueSize, io: io}
	t.irqs = make([]chan struct{}, numQueues)
	t.kicks = make([]chan struct{}, numQueues)
	for i := range t.irqs {
		t.irqs[i] = make(chan struct{}, 1)
		t.kicks[i] = make(chan struct{}, 1)
	}
	t.queues = make([]*virtq.Queue, numQueues)
	return t
}

func (t *transport) DeviceFeatures() (uint64, error) { return t.model.Features(), nil }

func (t *transport) SetFeatures(f uint64) error {
	if err := t.model.Ack(f); err != nil {
		return err
	}
	t.mu.Lock()
	t.features = f
	t.mu.Unlock()
	return nil
}

func (t *transport) Config() ([]byte, error) { return t.model.Config(), nil }

func (t *transport) MaxQueueSize(q int) int {
	if q < 0 || q >= t.numQueues {
		return 0
	}
	return t.queueSize
}

func (t *transport) SetupQueue(q int, r blkdriver.RingAddr) error {
	if q < 0 || q >= t.numQueues || int(r.Size) > t.queueSize {
		return fmt.Errorf("virtio-blk: queue %d of size %d: the device has %d queues of %d", q, r.Size, t.numQueues, t.queueSize)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	vq, err := virtq.New(t.mem, r.Size, r.Desc, r.Avail, r.Used, t.features)
	if err != nil {
		return err
	}
	t.queues[q] = vq
	return nil
}

// Start starts an IO goroutine for each queue set up.
func (t *transport) Start() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stop = make(chan struct{})
	for i, q := range t.queues {
		if q == nil {
			continue
		}
		t.wg.Add(1)
		go t.serve(i, q, t.stop)
	}
	return nil
}

func (t *transport) serve(i int, q *virtq.Queue, stop chan struct{}) {
	defer t.wg.Done()
	irq := t.irqs[i]
	notify := func() {
		select {
		case irq <- struct{}{}:
		default: // one is pending already: the driver reaps all there is
		}
	}
	for {
		select {
		case <-stop:
			return
		case <-t.kicks[i]:
		}
		t.io.RLock()
		err := t.model.Serve(q, notify)
		t.io.RUnlock()
		if err != nil {
			t.mu.Lock()
			if t.err == nil {
				t.err = err
			}
			t.mu.Unlock()
		}
	}
}

func (t *transport) Kick(q int) {
	select {
	case t.kicks[q] <- struct{}{}:
	default: // the IO goroutine has one to take already
	}
}

func (t *transport) Interrupt(q int) <-chan struct{} { return t.irqs[q] }

// Reset stops the IO goroutines and waits for the requests in flight.
func (t *transport) Reset() error {
	t.mu.Lock()
	stop := t.stop
	t.stop = nil
	t.mu.Unlock()
	if stop != nil {
		close(stop)
	}
	t.wg.Wait()
	t.model.Reset()
	t.mu.Lock()
	clear(t.queues)
	t.features = 0
	t.mu.Unlock()
	return nil
}

// Err is what put the device in the needs-reset state, if anything.
func (t *transport) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}
