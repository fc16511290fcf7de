// Package virtqtest is a minimal driver side of a split virtqueue, written
// from the virtio 1.x specification, for tests of devices: it lays out
// descriptor tables and rings in guest memory, makes chains available, and
// reads the used ring. It also writes raw, malformed rings on request.
package virtqtest

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"minivmm/vm/guestmem"
	"minivmm/vm/virtq"
)

// Descriptor flags, as the driver writes them.
const (
	DescNext     = 1
	DescWrite    = 2
	DescIndirect = 4
)

// Buf is one buffer of a chain: Len bytes at GPA, device-writable if Write.
type Buf struct {
	GPA   uint64
	Len   uint32
	Write bool
}

// Driver is the driver side of one queue. Not safe for concurrent use.
type Driver struct {
	Mem                        *guestmem.Memory
	Size                       uint16
	DescGPA, AvailGPA, UsedGPA uint64
	Features                   uint64

	free     []uint16   // free descriptor indices
	chains   [][]uint16 // by head: the descriptors its chain holds
	availIdx uint16
	lastUsed uint16
	pending  int
	next     uint64 // bump allocator for buffers and indirect tables
	end      uint64
	barrier  atomic.Uint32
}

// New lays a queue of size entries out at GPA base (rings page-aligned)
// and allocates buffers from the memory after it up to end.
func New(mem *guestmem.Memory, size uint16, base, end uint64, features uint64) *Driver {
	n := uint64(size)
	d := &Driver{Mem: mem, Size: size, Features: features, chains: make([][]uint16, size)}
	d.DescGPA = base
	d.AvailGPA = align(d.DescGPA+16*n, 4096)
	d.UsedGPA = align(d.AvailGPA+6+2*n, 4096)
	d.next = align(d.UsedGPA+6+8*n, 4096)
	d.end = end
	for i := uint16(0); i < size; i++ {
		d.free = append(d.free, i)
	}
	// Zero the rings: memory may hold an earlier test's queue.
	for _, r := range [][2]uint64{{d.DescGPA, 16 * n}, {d.AvailGPA, 6 + 2*n}, {d.UsedGPA, 6 + 8*n}} {
		clear(d.must(r[0], r[1]))
	}
	return d
}

func align(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

func (d *Driver) must(gpa, n uint64) []byte {
	b, err := d.Mem.Slice(gpa, n)
	if err != nil {
		panic(fmt.Sprintf("virtqtest: %v", err))
	}
	return b
}

// Queue makes the device side of this queue.
func (d *Driver) Queue() (*virtq.Queue, error) {
	return virtq.New(d.Mem, d.Size, d.DescGPA, d.AvailGPA, d.UsedGPA, d.Features)
}

// Alloc reserves n bytes of buffer memory (16-aligned) and returns its GPA.
func (d *Driver) Alloc(n uint64) uint64 { return d.AllocAligned(n, 16) }

// AllocAligned is Alloc at a multiple of a (a power of 2): a guest's
// data buffers are page-aligned, and copies into them cost half as much.
func (d *Driver) AllocAligned(n, a uint64) uint64 {
	a = align(d.next, a)
	if a+n > d.end {
		panic("virtqtest: out of buffer memory")
	}
	d.next = a + n
	return a
}

// Bytes is guest memory at gpa.
func (d *Driver) Bytes(gpa, n uint64) []byte { return d.must(gpa, n) }

// WriteDesc writes descriptor i of the table at table (a GPA) as given.
func (d *Driver) WriteDesc(table uint64, i uint16, addr uint64, length uint32, flags, next uint16) {
	b := d.must(table+16*uint64(i), 16)
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], length)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

// Publish puts head in the next available slot and makes it visible.
func (d *Driver) Publish(head uint16) {
	slot := d.must(d.AvailGPA+4+2*uint64(d.availIdx%d.Size), 2)
	binary.LittleEndian.PutUint16(slot, head)
	d.availIdx++
	binary.LittleEndian.PutUint16(d.must(d.AvailGPA+2, 2), d.availIdx)
}

// SetAvailIdx writes the available index as given (to start near a
// wrap, or to lie about how many entries there are).
func (d *Driver) SetAvailIdx(v uint16) {
	d.availIdx = v
	binary.LittleEndian.PutUint16(d.must(d.AvailGPA+2, 2), v)
}

// SetUsedIdx writes the used ring's index (before the device starts) and
// where the driver reads from next.
func (d *Driver) SetUsedIdx(v uint16) {
	d.lastUsed = v
	binary.LittleEndian.PutUint16(d.must(d.UsedGPA+2, 2), v)
}

// Add makes a chain of bufs available, through an indirect table if
// indirect; it returns the head, or false when descriptors ran out.
func (d *Driver) Add(bufs []Buf, indirect bool) (uint16, bool) {
	need := len(bufs)
	if indirect {
		need = 1
	}
	if need > len(d.free) || len(bufs) == 0 {
		return 0, false
	}
	ids := d.free[len(d.free)-need:]
	d.free = d.free[:len(d.free)-need]
	head := ids[0]
	d.chains[head] = append(d.chains[head][:0], ids...)
	d.pending++
	if indirect {
		table := d.Alloc(16 * uint64(len(bufs)))
		d.writeChain(table, seq(len(bufs)), bufs)
		d.WriteDesc(d.DescGPA, head, table, uint32(16*len(bufs)), DescIndirect, 0)
	} else {
		d.writeChain(d.DescGPA, ids, bufs)
	}
	d.Publish(head)
	return head, true
}

func seq(n int) []uint16 {
	s := make([]uint16, n)
	for i := range s {
		s[i] = uint16(i)
	}
	return s
}

func (d *Driver) writeChain(table uint64, ids []uint16, bufs []Buf) {
	for i, b := range bufs {
		var flags, next uint16
		if b.Write {
			flags |= DescWrite
		}
		if i+1 < len(bufs) {
			flags |= DescNext
			next = ids[i+1]
		}
		d.WriteDesc(table, ids[i], b.GPA, b.Len, flags, next)
	}
}

// Used takes the next used element, freeing its chain's descriptors.
func (d *Driver) Used() (head uint16, written uint32, ok bool) {
	idx := binary.LittleEndian.Uint16(d.must(d.UsedGPA+2, 2))
	if idx == d.lastUsed {
		return 0, 0, false
	}
	e := d.must(d.UsedGPA+4+8*uint64(d.lastUsed%d.Size), 8)
	d.lastUsed++
	id := binary.LittleEndian.Uint32(e)
	head = uint16(id)
	if int(head) < len(d.chains) && len(d.chains[head]) > 0 {
		d.free = append(d.free, d.chains[head]...)
		d.chains[head] = d.chains[head][:0]
		d.pending--
	}
	return head, binary.LittleEndian.Uint32(e[4:]), true
}

// SetUsedEvent writes used_event: the driver wants an interrupt when the
// used index passes it (EVENT_IDX).
func (d *Driver) SetUsedEvent(v uint16) {
	binary.LittleEndian.PutUint16(d.must(d.AvailGPA+4+2*uint64(d.Size), 2), v)
}

// SetAvailFlags writes the available ring's flags (NO_INTERRUPT = 1).
func (d *Driver) SetAvailFlags(f uint16) {
	binary.LittleEndian.PutUint16(d.must(d.AvailGPA, 2), f)
}

// AvailEvent is the device's avail_event (EVENT_IDX).
func (d *Driver) AvailEvent() uint16 {
	return binary.LittleEndian.Uint16(d.must(d.UsedGPA+4+8*uint64(d.Size), 2))
}

// UsedFlags is the used ring's flags (NO_NOTIFY = 1).
func (d *Driver) UsedFlags() uint16 { return binary.LittleEndian.Uint16(d.must(d.UsedGPA, 2)) }

// Pending is the number of chains made available and not yet used.
func (d *Driver) Pending() int { return d.pending }

// ArmInterrupt asks for an interrupt at the next used element (with
// EVENT_IDX: used_event = the next index to read, as Linux's
// virtqueue_enable_cb) and says whether elements are used already, which
// the caller takes instead of waiting: no interrupt may come for them.
func (d *Driver) ArmInterrupt() (pending bool) {
	d.SetUsedEvent(d.lastUsed)
	d.SetAvailFlags(0)
	d.barrier.Add(1) // used_event is visible before the index is read
	return binary.LittleEndian.Uint16(d.must(d.UsedGPA+2, 2)) != d.lastUsed
}
