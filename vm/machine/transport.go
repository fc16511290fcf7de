package machine

import (
	"fmt"
	"sync"
	"sync/atomic"

	"minivmm/vm/blkdriver"
	"minivmm/vm/guestmem"
	"minivmm/vm/virtioblk"
	"minivmm/vm/virtq"
)

// transport connects the built-in guest's driver to a device model in
// the same process, as a virtio-pci transport would connect a guest to
// QEMU's device: Kick is the doorbell, handled on the vCPU that rings it
// (QEMU's notify without an ioeventfd: no hand-off to another thread
// before the device pops the requests, which it then serves on their own
// goroutines), and the device's notifications arrive on a channel per
// queue (an irqfd).
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
	serving  []queueServer
	irqs     []chan struct{}
	started  bool
	err      error // what broke the device
}

// queueServer makes one vCPU at a time serve a queue: a kick that finds
// another serving leaves it a note to look again.
type queueServer struct {
	mu      sync.Mutex
	pending atomic.Bool
}

var _ blkdriver.Transport = (*transport)(nil)

func newTransport(model *virtioblk.Device, mem *guestmem.Memory, numQueues, queueSize int, io *sync.RWMutex) *transport {
	t := &transport{model: model, mem: mem, numQueues: numQueues, queueSize: queueSize, io: io}
	t.irqs = make([]chan struct{}, numQueues)
	t.serving = make([]queueServer, numQueues)
	for i := range t.irqs {
		t.irqs[i] = make(chan struct{}, 1)
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

// Start lets kicks reach the device.
func (t *transport) Start() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.started = true
	return nil
}

// Kick serves queue q on the calling vCPU; if another vCPU is serving it,
// that one looks again before it stops.
func (t *transport) Kick(q int) {
	s := &t.serving[q]
	s.pending.Store(true)
	for s.pending.Load() && s.mu.TryLock() {
		s.pending.Store(false)
		t.serve(q)
		s.mu.Unlock()
	}
}

func (t *transport) serve(i int) {
	t.mu.Lock()
	q := t.queues[i]
	started := t.started
	t.mu.Unlock()
	if q == nil || !started {
		return
	}
	irq := t.irqs[i]
	notify := func() {
		select {
		case irq <- struct{}{}:
		default: // one is pending already: the driver reaps all there is
		}
	}
	// A stopped machine holds io: the vCPU waits here, as its MMIO
	// exit would wait for the device.
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

func (t *transport) Interrupt(q int) <-chan struct{} { return t.irqs[q] }

// Reset stops the device taking requests and waits for those in flight.
func (t *transport) Reset() error {
	t.mu.Lock()
	t.started = false
	t.mu.Unlock()
	for i := range t.serving {
		t.serving[i].mu.Lock() // a vCPU serving the queue is done with it
		t.serving[i].mu.Unlock()
	}
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
