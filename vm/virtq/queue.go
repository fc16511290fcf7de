// Package virtq is the device side of a split virtqueue (virtio 1.x,
// section 2.7): it takes the chains a driver makes available, as slices of
// guest memory, and returns them through the used ring.
//
// The rings live in guest memory that the driver writes concurrently; the
// device reads each field once, checks it, and never trusts what it read
// before. A malformed ring is a driver bug the device cannot recover from:
// the queue is broken (Pop returns an error wrapping ErrNeedsReset, for
// ever) and the transport sets DEVICE_NEEDS_RESET, as QEMU's virtio_error
// does. Nothing a driver writes makes the device panic, hang, or touch
// memory outside guest RAM.
package virtq

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"minivmm/vm/guestmem"
)

// Feature bits of the ring (virtio 1.x, section 6).
const (
	FeatureIndirectDesc = 1 << 28 // VIRTIO_RING_F_INDIRECT_DESC
	FeatureEventIdx     = 1 << 29 // VIRTIO_RING_F_EVENT_IDX
	FeatureVersion1     = 1 << 32 // VIRTIO_F_VERSION_1
)

// Descriptor flags.
const (
	descNext     = 1
	descWrite    = 2
	descIndirect = 4
)

const (
	availNoInterrupt = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT
	usedNoNotify     = 1 // VIRTQ_USED_F_NO_NOTIFY
	descSize         = 16
	// MaxSize is the largest split queue (virtio 1.x, 2.7).
	MaxSize = 32768
	// MaxIndirect bounds an indirect table on a queue smaller than it
	// (QEMU's VIRTQUEUE_MAX_SIZE): a driver may chain more buffers
	// through one than its queue has entries (Linux sizes them by
	// seg_max), but not without limit.
	MaxIndirect = 1024
)

// ErrNeedsReset: the driver broke the queue; the device needs a reset.
var ErrNeedsReset = errors.New("virtqueue: device needs reset")

// Error is a malformed ring or chain. It wraps ErrNeedsReset, and the
// guest memory error (*guestmem.AddrError) where one caused it.
type Error struct {
	Head   int    // the chain's head descriptor, -1 if none was read
	Reason string // what the driver did wrong
	Err    error  // cause, or nil
}

func (e *Error) Error() string {
	s := "virtqueue: "
	if e.Head >= 0 {
		s += fmt.Sprintf("chain at descriptor %d: ", e.Head)
	}
	s += e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrNeedsReset, e.Err}
	}
	return []error{ErrNeedsReset}
}

// Chain is one request: the buffers of a descriptor chain, in order.
// Out is what the device reads (the driver's output, QEMU's out_sg), In
// what it writes (QEMU's in_sg); every slice points into guest memory.
type Chain struct {
	Head uint16
	Out  [][]byte
	In   [][]byte
}

// InLen is the number of device-writable bytes.
func (c *Chain) InLen() int {
	n := 0
	for _, b := range c.In {
		n += len(b)
	}
	return n
}

// Queue is the device side of one split virtqueue. Pop (and the notify
// switches) may be called from one goroutine at a time; Push from any
// number at once.
type Queue struct {
	mem      *guestmem.Memory
	size     uint16
	features uint64
	desc     []byte // size*16
	avail    []byte // 6 + 2*size
	used     []byte // 6 + 8*size

	popMu     sync.Mutex
	lastAvail uint16    // next avail ring entry to take
	notifyOff bool      // DisableNotify in force
	err       error     // the queue is broken
	resubmit  []uint16  // heads to take before the ring's, oldest first (TrackInflight)
	inflight  *inflight // TrackInflight's record, or nil

	pushMu         sync.Mutex
	usedIdx        uint16
	signalled      uint16 // used idx when Push last decided to notify
	signalledValid bool

	barrier atomic.Uint32 // its read-modify-write is the full memory barrier the ring protocol needs
}

// New sets up the device side of a queue of size entries whose descriptor
// table, available and used rings are at the given guest-physical
// addresses, with the negotiated features (FeatureIndirectDesc,
// FeatureEventIdx are the ones it looks at). The used index starts from
// what the used ring holds (a vhost-user back end takes over a running
// ring); the next available entry is 0 until SetNextAvail.
func New(mem *guestmem.Memory, size uint16, desc, avail, used uint64, features uint64) (*Queue, error) {
	if size == 0 || size&(size-1) != 0 || size > MaxSize {
		return nil, fmt.Errorf("virtqueue: size %d is not a power of 2 up to %d", size, MaxSize)
	}
	if desc%16 != 0 || avail%2 != 0 || used%4 != 0 {
		return nil, fmt.Errorf("virtqueue: rings at 0x%x/0x%x/0x%x are misaligned (16/2/4)", desc, avail, used)
	}
	q := &Queue{mem: mem, size: size, features: features}
	var err error
	n := uint64(size)
	if q.desc, err = mem.Slice(desc, n*descSize); err != nil {
		return nil, fmt.Errorf("virtqueue: descriptor table: %w", err)
	}
	if q.avail, err = mem.Slice(avail, 6+2*n); err != nil {
		return nil, fmt.Errorf("virtqueue: available ring: %w", err)
	}
	if q.used, err = mem.Slice(used, 6+8*n); err != nil {
		return nil, fmt.Errorf("virtqueue: used ring: %w", err)
	}
	q.usedIdx = binary.LittleEndian.Uint16(q.used[2:])
	return q, nil
}

// Size is the number of entries.
func (q *Queue) Size() uint16 { return q.size }

// fence orders the memory accesses before it against those after it (a
// locked instruction on amd64), and stops the compiler moving them across.
func (q *Queue) fence() { q.barrier.Add(1) }

func (q *Queue) eventIdx() bool { return q.features&FeatureEventIdx != 0 }

func (q *Queue) availIdx() uint16 { return binary.LittleEndian.Uint16(q.avail[2:]) }

// NextAvail is the index of the next available entry the device will take
// (vhost-user GET_VRING_BASE).
func (q *Queue) NextAvail() uint16 {
	q.popMu.Lock()
	defer q.popMu.Unlock()
	return q.lastAvail
}

// SetNextAvail sets where the device resumes taking entries (vhost-user
// SET_VRING_BASE).
func (q *Queue) SetNextAvail(idx uint16) {
	q.popMu.Lock()
	defer q.popMu.Unlock()
	q.lastAvail = idx
}

// UsedIdx is the used ring's index as the device last published it.
func (q *Queue) UsedIdx() uint16 {
	q.pushMu.Lock()
	defer q.pushMu.Unlock()
	return q.usedIdx
}

// Err is what broke the queue, or nil.
func (q *Queue) Err() error {
	q.popMu.Lock()
	defer q.popMu.Unlock()
	return q.err
}

// Pop takes the next available chain; ok is false when there is none.
// An error wraps ErrNeedsReset: the queue is broken and stays so.
func (q *Queue) Pop() (c Chain, ok bool, err error) {
	ok, err = q.PopInto(&c)
	return c, ok, err
}

// PopInto is Pop reusing c's lists (c.In and c.Out are truncated first).
func (q *Queue) PopInto(c *Chain) (ok bool, err error) {
	q.popMu.Lock()
	defer q.popMu.Unlock()
	if q.err != nil {
		return false, q.err
	}
	if len(q.resubmit) > 0 {
		// A chain the previous device took and did not return: it
		// stays recorded as taken, with its place in the order.
		c.Head = q.resubmit[0]
		c.In, c.Out = c.In[:0], c.Out[:0]
		if err := q.readChain(c); err != nil {
			c.In, c.Out = c.In[:0], c.Out[:0]
			return false, q.broken(err)
		}
		q.resubmit = q.resubmit[1:]
		return true, nil
	}
	idx := q.availIdx()
	if idx == q.lastAvail {
		if q.notifyOff {
			return false, nil
		}
		// The driver may have added an entry and read avail_event (or
		// the flags) before the device's last store to them was
		// visible, and not kicked: look again after a barrier (the
		// device's half of the store-load pairing).
		q.fence()
		if idx = q.availIdx(); idx == q.lastAvail {
			return false, nil
		}
	}
	if pending := idx - q.lastAvail; pending > q.size {
		return false, q.broken(&Error{Head: -1, Reason: fmt.Sprintf("available index moved from %d to %d, more than the queue's %d entries", q.lastAvail, idx, q.size)})
	}
	// The entry and the descriptors it names are read only after the
	// index that published them.
	q.fence()
	slot := 4 + 2*int(q.lastAvail&(q.size-1))
	head := binary.LittleEndian.Uint16(q.avail[slot:])
	if head >= q.size {
		return false, q.broken(&Error{Head: -1, Reason: fmt.Sprintf("available entry %d names descriptor %d of a %d-entry table", q.lastAvail, head, q.size)})
	}
	c.Head = head
	c.In, c.Out = c.In[:0], c.Out[:0]
	if err := q.readChain(c); err != nil {
		c.In, c.Out = c.In[:0], c.Out[:0]
		return false, q.broken(err)
	}
	if q.inflight != nil {
		q.inflight.took(q, head)
	}
	q.lastAvail++
	if q.eventIdx() && !q.notifyOff {
		q.setAvailEvent(q.lastAvail)
	}
	return true, nil
}

func (q *Queue) broken(err error) error {
	q.err = err
	return err
}

// readChain collects the buffers of the chain at c.Head.
func (q *Queue) readChain(c *Chain) error {
	head := int(c.Head)
	bad := func(format string, a ...any) error {
		return &Error{Head: head, Reason: fmt.Sprintf(format, a...)}
	}
	table, n := q.desc, uint32(q.size)
	i := uint32(c.Head)
	count := uint32(0)
	indirect, writing := false, false
	for {
		if i >= n {
			return bad("next descriptor %d is outside the %d-entry table", i, n)
		}
		if count++; count > n {
			return bad("chain has more descriptors than its %d-entry table: it loops", n)
		}
		d := table[descSize*i : descSize*i+descSize]
		addr := binary.LittleEndian.Uint64(d)
		length := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])
		if flags&descIndirect != 0 {
			switch {
			case q.features&FeatureIndirectDesc == 0:
				return bad("indirect descriptor %d, but INDIRECT_DESC was not negotiated", i)
			case indirect:
				return bad("indirect descriptor %d inside an indirect table", i)
			case count != 1:
				return bad("indirect descriptor %d is not the chain's head", i)
			case flags&descNext != 0:
				return bad("indirect descriptor %d has NEXT set", i)
			case length == 0 || length%descSize != 0:
				return bad("indirect table of %d bytes is not a whole number of descriptors", length)
			case length/descSize > max(uint32(q.size), MaxIndirect):
				return bad("indirect table of %d descriptors, more than %d", length/descSize, max(uint32(q.size), MaxIndirect))
			}
			t, err := q.mem.Slice(addr, uint64(length))
			if err != nil {
				return &Error{Head: head, Reason: "indirect table", Err: err}
			}
			table, n, i, count, indirect = t, length/descSize, 0, 0, true
			continue
		}
		if length == 0 {
			return bad("descriptor %d has zero length", i)
		}
		var err error
		if flags&descWrite != 0 {
			writing = true
			c.In, err = q.mem.AppendSlices(c.In, addr, uint64(length))
		} else {
			if writing {
				return bad("device-readable descriptor %d after a device-writable one", i)
			}
			c.Out, err = q.mem.AppendSlices(c.Out, addr, uint64(length))
		}
		if err != nil {
			return &Error{Head: head, Reason: fmt.Sprintf("descriptor %d", i), Err: err}
		}
		if flags&descNext == 0 {
			return nil
		}
		i = uint32(next)
	}
}

func (q *Queue) setAvailEvent(v uint16) {
	binary.LittleEndian.PutUint16(q.used[4+8*int(q.size):], v)
}

// DisableNotify asks the driver not to kick for new entries (a hint: it
// may still kick), while the device is busy popping.
func (q *Queue) DisableNotify() {
	q.popMu.Lock()
	defer q.popMu.Unlock()
	q.notifyOff = true
	if !q.eventIdx() {
		q.setUsedFlags(usedNoNotify)
	}
	// With EVENT_IDX, avail_event simply stays behind: the driver kicks
	// only when its index crosses it.
}

// EnableNotify asks the driver to kick for new entries again, and says
// whether some are available already: then the caller pops them, since
// no kick will come for those.
func (q *Queue) EnableNotify() (more bool) {
	q.popMu.Lock()
	defer q.popMu.Unlock()
	q.notifyOff = false
	if q.eventIdx() {
		q.setAvailEvent(q.lastAvail)
	} else {
		q.setUsedFlags(0)
	}
	// The driver may have added entries before it saw the request to kick.
	q.fence()
	return q.err == nil && q.availIdx() != q.lastAvail
}

func (q *Queue) setUsedFlags(f uint16) {
	// Only the device writes the used ring's flags; pushMu keeps this
	// store off the (flags, idx) word Push is writing.
	q.pushMu.Lock()
	binary.LittleEndian.PutUint16(q.used[0:], f)
	q.pushMu.Unlock()
}

// Push returns the chain at head to the driver with written bytes of its
// device-writable buffers filled, and says whether the driver wants an
// interrupt now (the used ring's suppression rules, EVENT_IDX's
// used_event included). Safe for completions from many goroutines.
func (q *Queue) Push(head uint16, written uint32) (notify bool) {
	if head >= q.size {
		return false
	}
	q.pushMu.Lock()
	defer q.pushMu.Unlock()
	if q.inflight != nil {
		q.inflight.returning(q, head)
		defer q.inflight.returned(q, head)
	}
	slot := q.used[4+8*int(q.usedIdx&(q.size-1)):]
	binary.LittleEndian.PutUint32(slot, uint32(head))
	binary.LittleEndian.PutUint32(slot[4:], written)
	// The element is visible before the index that publishes it.
	q.fence()
	q.usedIdx++
	binary.LittleEndian.PutUint16(q.used[2:], q.usedIdx)
	// The index is visible before the device looks at whether the
	// driver wants to hear of it.
	q.fence()
	if !q.eventIdx() {
		return binary.LittleEndian.Uint16(q.avail)&availNoInterrupt == 0
	}
	old, valid := q.signalled, q.signalledValid
	q.signalled, q.signalledValid = q.usedIdx, true
	if !valid {
		return true
	}
	event := binary.LittleEndian.Uint16(q.avail[4+2*int(q.size):])
	// vring_need_event: did the index pass used_event since the last
	// decision?
	return q.usedIdx-event-1 < q.usedIdx-old
}
