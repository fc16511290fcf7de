package vhostuser

import (
	"encoding/binary"
	"sync"

	"golang.org/x/sys/unix"

	"minivmm/vm/virtioblk"
	"minivmm/vm/virtq"
)

// blkDevice serves a virtio-blk device (package virtioblk) to a front end.
type blkDevice struct {
	dev       *virtioblk.Device
	numQueues int
	logf      func(format string, args ...any)
}

func (b *blkDevice) Features() uint64 { return b.dev.Features() }
func (b *blkDevice) NumQueues() int   { return b.numQueues }
func (b *blkDevice) Config() []byte   { return b.dev.Config() }
func (b *blkDevice) Ack(f uint64) error {
	return b.dev.Ack(f)
}
func (b *blkDevice) SetConfig(off uint32, data []byte) error {
	return b.dev.WriteConfig(int(off), data)
}

// Reset forgets what a front end set up: its features, a needs-reset
// state, the write-cache mode it chose (all queues are stopped).
func (b *blkDevice) Reset() { b.dev.Reset() }

func (b *blkDevice) Stop()  { b.dev.Stop() }
func (b *blkDevice) Start() { b.dev.Start() }

func (b *blkDevice) StartQueue(c QueueConfig) (Queue, error) {
	q, err := virtq.New(c.Mem, c.Size, c.Desc, c.Avail, c.Used, c.Features)
	if err != nil {
		return nil, err
	}
	q.SetNextAvail(c.Base)
	if c.Inflight != nil {
		n, err := q.TrackInflight(c.Inflight)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			b.logf("vhost-user-blk queue %d: %d requests a previous back end left in flight are resubmitted", c.Index, n)
		}
	}
	return &blkQueue{b: b, q: q, index: c.Index, notify: c.Notify, fail: c.Fail}, nil
}

// blkQueue runs Serve on one queue, one kick at a time.
type blkQueue struct {
	b      *blkDevice
	q      *virtq.Queue
	index  int
	notify func()
	fail   func()

	mu      sync.Mutex
	stopped bool
	broken  bool
}

func (q *blkQueue) Kick() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped || q.broken {
		return
	}
	if err := q.b.dev.Serve(q.q, q.notify); err != nil {
		// The driver broke the ring or sent what is no request: the
		// device needs a reset. vhost-user's way to say so is the
		// queue's error eventfd; the front end reports it.
		q.broken = true
		q.b.logf("vhost-user-blk queue %d: %v", q.index, err)
		if q.fail != nil {
			q.fail()
		}
	}
}

func (q *blkQueue) Stop() uint16 {
	q.mu.Lock()
	q.stopped = true
	q.mu.Unlock()
	// Every request in flight lands in guest memory before the memory
	// may go (a front end that died, a SET_MEM_TABLE) or the front end
	// takes the ring back.
	q.b.dev.Drain()
	return q.q.NextAvail()
}

// signal adds one to an eventfd's counter. EAGAIN means the counter is
// saturated: the other side has been told already.
func signal(fd int) {
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	unix.Write(fd, one[:])
}
