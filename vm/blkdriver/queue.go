package blkdriver

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Descriptor flags (2.7.5).
const (
	descNext     = 1
	descWrite    = 2
	descIndirect = 4
)

// Ring flags: the driver's "no interrupt" (2.7.7) and the device's "no
// notify" (2.7.10); both are hints, and are ignored with EVENT_IDX.
const (
	availNoInterrupt = 1
	usedNoNotify     = 1
)

// hdrSlot is the room each descriptor head has for its request's header
// (16 bytes) and status byte, in the queue's header area.
const hdrSlot = 32

// A Request is one virtio-blk request. Data is its data buffers in guest
// memory: read by the device for OUT, DISCARD and WRITE_ZEROES (the
// segment list), written by it for IN and GET_ID.
type Request struct {
	Type   uint32
	Sector uint64
	Data   []Region
	// Done, if set, is called once the device has completed the request,
	// on the queue's interrupt goroutine: it must not block.
	Done func(*Request)

	// Status is the status byte the device wrote; Len what it reports
	// having written into the request's buffers (used.len).
	Status byte
	Len    uint32
}

// writable says whether the device writes the data buffers of a request
// of type t.
func writable(t uint32) bool { return t == TypeIn || t == TypeGetID }

// Queue is the driver's side of one split virtqueue.
type Queue struct {
	index    int
	t        Transport
	mem      *Memory
	size     uint16
	eventIdx bool
	desc     Region // 16 bytes per descriptor
	avail    Region // flags, idx, ring[size], used_event, padding
	used     Region // flags, idx, ring[size] of 8 bytes, avail_event, padding
	hdrs     Region // hdrSlot bytes per head
	indirect Region // indirectMax descriptors per head; empty without INDIRECT
	indMax   int

	mu        sync.Mutex
	space     sync.Cond // a chain was freed, or the queue closed
	freeHead  uint16
	numFree   int
	next      []uint16   // the driver's own chain links: never read back from guest memory
	chainLen  []uint16   // descriptors each head's chain holds
	inflight  []*Request // by head
	availIdx  uint16     // next avail entry to fill
	published uint16     // avail index the device can see
	lastUsed  uint16
	closed    bool
	err       error // the device broke the protocol
	stop      chan struct{}
	stopped   chan struct{}
}

func newQueue(index int, t Transport, mem *Memory, size uint16, eventIdx bool, indMax int) (q *Queue, err error) {
	q = &Queue{index: index, t: t, mem: mem, size: size, eventIdx: eventIdx, indMax: indMax}
	defer func() {
		if err != nil {
			q.free()
		}
	}()
	n := int(size)
	if q.desc, err = mem.Alloc(16*n, 16); err != nil {
		return nil, err
	}
	// The padding makes the trailing 16-bit event fields the low half of
	// an aligned 32-bit word, which sync/atomic can load and store.
	if q.avail, err = mem.Alloc(8+2*n, 4); err != nil {
		return nil, err
	}
	if q.used, err = mem.Alloc(8+8*n, 4); err != nil {
		return nil, err
	}
	if q.hdrs, err = mem.Alloc(hdrSlot*n, 16); err != nil {
		return nil, err
	}
	if indMax > 0 {
		if q.indirect, err = mem.Alloc(16*indMax*n, 16); err != nil {
			return nil, err
		}
	}
	q.next = make([]uint16, n)
	q.chainLen = make([]uint16, n)
	q.inflight = make([]*Request, n)
	for i := range q.next {
		q.next[i] = uint16(i + 1)
	}
	q.numFree = n
	q.space.L = &q.mu
	return q, nil
}

func (q *Queue) free() {
	for _, r := range []Region{q.desc, q.avail, q.used, q.hdrs, q.indirect} {
		q.mem.Free(r)
	}
}

// Index is the queue's number on its device.
func (q *Queue) Index() int { return q.index }

// Size is the number of descriptors in the queue.
func (q *Queue) Size() int { return int(q.size) }

func (q *Queue) addr() RingAddr {
	return RingAddr{Size: q.size, Desc: q.desc.GPA, Avail: q.avail.GPA, Used: q.used.GPA}
}

// word is the 32-bit word of guest memory at b[off:], for sync/atomic:
// the ring indexes are how driver and device order their other accesses.
func word(b []byte, off int) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }

func (q *Queue) putDesc(table []byte, i int, addr uint64, n uint32, flags, next uint16) {
	d := table[16*i : 16*i+16]
	binary.LittleEndian.PutUint64(d[0:], addr)
	binary.LittleEndian.PutUint32(d[8:], n)
	binary.LittleEndian.PutUint16(d[12:], flags)
	binary.LittleEndian.PutUint16(d[14:], next)
}

// Submit makes reqs available to the device, waiting for free
// descriptors where the queue is full, and notifies the device once
// (unless it asked not to be).
func (q *Queue) Submit(reqs ...*Request) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	var err error
	for _, r := range reqs {
		if err = q.addLocked(r); err != nil {
			break
		}
	}
	kick := q.flushLocked()
	q.mu.Unlock()
	if kick {
		q.t.Kick(q.index)
	}
	return err
}

// flushLocked publishes the entries added since the last flush and says
// whether the device wants to hear of them.
func (q *Queue) flushLocked() (kick bool) {
	if q.published == q.availIdx {
		return false
	}
	old := q.published
	q.publishLocked()
	q.published = q.availIdx
	return q.needKickLocked(old)
}

// addLocked builds r's chain (header, data, status) and puts its head in
// the avail ring, without publishing the new index yet.
func (q *Queue) addLocked(r *Request) error {
	segs := len(r.Data) + 2
	useIndirect := q.indMax > 0 && segs > 2 && segs <= q.indMax
	need := segs
	if useIndirect {
		need = 1
	}
	if need > int(q.size) {
		return fmt.Errorf("blkdriver: request of %d segments does not fit a queue of %d", len(r.Data), q.size)
	}
	for q.numFree < need && !q.closed {
		if q.published != q.availIdx {
			// The device must see what this batch filled the queue
			// with, or no descriptor will ever come back.
			if q.flushLocked() {
				q.mu.Unlock()
				q.t.Kick(q.index)
				q.mu.Lock()
			}
			continue
		}
		q.space.Wait()
	}
	if q.closed {
		return ErrClosed
	}
	head := q.freeHead
	hdr := q.hdrs.Sub(int(head)*hdrSlot, hdrSlot)
	binary.LittleEndian.PutUint32(hdr.B[0:], r.Type)
	binary.LittleEndian.PutUint32(hdr.B[4:], 0)
	binary.LittleEndian.PutUint64(hdr.B[8:], r.Sector)
	hdr.B[16] = StatusNotCompleted // a device that does not write a status is caught
	dataFlags := uint16(0)
	if writable(r.Type) {
		dataFlags = descWrite
	}
	if useIndirect {
		table := q.indirect.Sub(int(head)*16*q.indMax, 16*segs)
		q.putDesc(table.B, 0, hdr.GPA, 16, descNext, 1)
		for i, d := range r.Data {
			q.putDesc(table.B, 1+i, d.GPA, uint32(len(d.B)), dataFlags|descNext, uint16(2+i))
		}
		q.putDesc(table.B, segs-1, hdr.GPA+16, 1, descWrite, 0)
		q.putDesc(q.desc.B, int(head), table.GPA, uint32(16*segs), descIndirect, 0)
		q.freeHead = q.next[head]
	} else {
		i := head
		for k := 0; k < segs; k++ {
			addr, n, flags := hdr.GPA, uint32(16), uint16(0)
			switch {
			case k == segs-1:
				addr, n, flags = hdr.GPA+16, 1, descWrite
			case k > 0:
				d := r.Data[k-1]
				addr, n, flags = d.GPA, uint32(len(d.B)), dataFlags
			}
			nx := q.next[i]
			if k < segs-1 {
				flags |= descNext
			}
			q.putDesc(q.desc.B, int(i), addr, n, flags, nx)
			if k < segs-1 {
				i = nx
			}
		}
		q.freeHead = q.next[i]
	}
	q.numFree -= need
	q.chainLen[head] = uint16(need)
	q.inflight[head] = r
	ring := 4 + 2*int(q.availIdx%q.size)
	binary.LittleEndian.PutUint16(q.avail.B[ring:], head)
	q.availIdx++
	return nil
}

// publishLocked stores the avail index: everything written before it (the
// descriptors, the ring entries, the header) is visible to a device that
// loads it.
func (q *Queue) publishLocked() {
	atomic.StoreUint32(word(q.avail.B, 0), uint32(q.availIdx)<<16)
}

// needKickLocked decides whether the device needs a notification for the
// entries from old to the avail index (2.7.10, 2.7.7.2 with EVENT_IDX).
func (q *Queue) needKickLocked(old uint16) bool {
	if old == q.availIdx {
		return false
	}
	if q.eventIdx {
		event := uint16(atomic.LoadUint32(word(q.used.B, 4+8*int(q.size))))
		return needEvent(event, q.availIdx, old)
	}
	return atomic.LoadUint32(word(q.used.B, 0))&usedNoNotify == 0
}

// needEvent is the spec's vring_need_event: whether moving an index from
// old to new passed event.
func needEvent(event, new, old uint16) bool { return new-event-1 < new-old }

// run takes the device's interrupts for the queue until stop.
func (q *Queue) run() {
	defer close(q.stopped)
	irq := q.t.Interrupt(q.index)
	for {
		select {
		case <-q.stop:
			return
		case <-irq:
			q.reap()
		}
	}
}

// Reap collects completed requests without waiting for an interrupt (a
// polling driver's way; also what a lost interrupt would need).
func (q *Queue) Reap() { q.reap() }

func (q *Queue) reap() {
	var done []*Request
	q.mu.Lock()
	for {
		usedIdx := uint16(atomic.LoadUint32(word(q.used.B, 0)) >> 16)
		if usedIdx == q.lastUsed {
			if !q.eventIdx {
				break
			}
			// Ask for an interrupt at the next entry, then look once
			// more: an entry the device added before it saw the new
			// used_event would otherwise wait for the one after it.
			atomic.StoreUint32(word(q.avail.B, 4+2*int(q.size)), uint32(q.lastUsed))
			if uint16(atomic.LoadUint32(word(q.used.B, 0))>>16) == q.lastUsed {
				break
			}
			continue
		}
		if uint16(usedIdx-q.lastUsed) > q.size {
			q.err = fmt.Errorf("blkdriver: queue %d: device moved the used index from %d to %d", q.index, q.lastUsed, usedIdx)
			break
		}
		e := q.used.B[4+8*int(q.lastUsed%q.size):]
		id, n := binary.LittleEndian.Uint32(e[0:]), binary.LittleEndian.Uint32(e[4:])
		q.lastUsed++
		if id >= uint32(q.size) || q.inflight[id] == nil {
			q.err = fmt.Errorf("blkdriver: queue %d: device returned head %d, which is not in flight", q.index, id)
			continue
		}
		r := q.inflight[id]
		q.inflight[id] = nil
		r.Len = n
		r.Status = q.hdrs.B[int(id)*hdrSlot+16]
		q.freeChainLocked(uint16(id))
		done = append(done, r)
	}
	if len(done) > 0 {
		q.space.Broadcast()
	}
	q.mu.Unlock()
	for _, r := range done {
		if r.Done != nil {
			r.Done(r)
		}
	}
}

func (q *Queue) freeChainLocked(head uint16) {
	last := head
	for k := 1; k < int(q.chainLen[head]); k++ {
		last = q.next[last]
	}
	q.next[last] = q.freeHead
	q.freeHead = head
	q.numFree += int(q.chainLen[head])
}

// InFlight is how many requests the device has not completed.
func (q *Queue) InFlight() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, r := range q.inflight {
		if r != nil {
			n++
		}
	}
	return n
}

// Err is the first protocol violation seen from the device, if any.
func (q *Queue) Err() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// Do submits r and waits for it; a status other than OK is a
// *StatusError.
func (q *Queue) Do(r *Request) error {
	ch := make(chan struct{})
	r.Done = func(*Request) { close(ch) }
	if err := q.Submit(r); err != nil {
		return err
	}
	<-ch
	if r.Status != StatusOK {
		return &StatusError{Type: r.Type, Sector: r.Sector, Status: r.Status}
	}
	return nil
}

// StatusError is a request the device completed with a status other than OK.
type StatusError struct {
	Type   uint32
	Sector uint64
	Status byte
}

func (e *StatusError) Error() string {
	name := map[byte]string{StatusIOErr: "IOERR", StatusUnsupp: "UNSUPP", StatusNotCompleted: "not completed"}[e.Status]
	if name == "" {
		name = fmt.Sprintf("status %#x", e.Status)
	}
	return fmt.Sprintf("virtio-blk request type %d at sector %d: %s", e.Type, e.Sector, name)
}

// StatusNotCompleted is the status of a request the device never
// completed (it was reset first): the status byte the driver primes.
const StatusNotCompleted = 0xff

// failInFlight completes the requests the device will never complete.
func (q *Queue) failInFlight() {
	var failed []*Request
	q.mu.Lock()
	for head, r := range q.inflight {
		if r != nil {
			q.inflight[head] = nil
			r.Status, r.Len = StatusNotCompleted, 0
			q.freeChainLocked(uint16(head))
			failed = append(failed, r)
		}
	}
	q.space.Broadcast()
	q.mu.Unlock()
	for _, r := range failed {
		if r.Done != nil {
			r.Done(r)
		}
	}
}

// close refuses new requests and wakes submitters waiting for room.
func (q *Queue) close() {
	q.mu.Lock()
	q.closed = true
	q.space.Broadcast()
	q.mu.Unlock()
}
