package virtq

import (
	"encoding/binary"
	"errors"
	"testing"
	"unsafe"

	"minivmm/vm/guestmem"
)

// Fuzz layout: 64 KiB of guest memory; the descriptor table, available
// and used rings at fixed places; the rest of the input is copied to
// dataGPA, where indirect tables and buffers may point.
const (
	fuzzMem   = 64 << 10
	descGPA   = 0x0000
	availGPA  = 0x1000
	usedGPA   = 0x2000
	dataGPA   = 0x3000
	rawAddrs  = 0x80 // input flag: descriptor addresses as given (else masked near RAM)
	doNotify  = 0x40 // input flag: toggle notifications between pops
	indFeat   = 0x01
	eventFeat = 0x02
)

// fuzzInput writes a fuzz case into memory: [features][size exp][start
// idx:2][avail count][heads...][descriptors...][data...].
func fuzzInput(mem []byte, in []byte) (size uint16, features uint64, start uint16, ok bool) {
	if len(in) < 5 {
		return 0, 0, 0, false
	}
	flags := in[0]
	size = 1 << (in[1]%5 + 1) // 2..32
	start = binary.LittleEndian.Uint16(in[2:])
	count := uint16(in[4])
	in = in[5:]
	if flags&indFeat != 0 {
		features |= FeatureIndirectDesc
	}
	if flags&eventFeat != 0 {
		features |= FeatureEventIdx
	}
	clear(mem)
	avail := mem[availGPA:]
	binary.LittleEndian.PutUint16(avail[2:], start+count)
	for i := uint16(0); i < count && len(in) >= 2; i++ {
		binary.LittleEndian.PutUint16(avail[4+2*int((start+i)%size):], binary.LittleEndian.Uint16(in))
		in = in[2:]
	}
	binary.LittleEndian.PutUint16(mem[usedGPA+2:], start)
	for i := 0; i < int(size) && len(in) >= 16; i++ {
		d := mem[descGPA+16*i:]
		copy(d[:16], in[:16])
		if flags&rawAddrs == 0 {
			// Addresses in [0, 2*RAM): half inside, so chains go deep.
			binary.LittleEndian.PutUint64(d, binary.LittleEndian.Uint64(d)%(2*fuzzMem))
			binary.LittleEndian.PutUint32(d[8:], binary.LittleEndian.Uint32(d[8:])%0x2000)
		}
		in = in[16:]
	}
	copy(mem[dataGPA:], in)
	return size, features, start, true
}

// inside checks that b lies within mem (guest RAM).
func inside(mem, b []byte) bool {
	if len(b) == 0 {
		return true
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(mem)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= lo && p+uintptr(len(b)) <= lo+uintptr(len(mem))
}

func desc(addr uint64, n uint32, flags, next uint16) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
	return b
}

func seed(flags byte, sizeExp byte, start uint16, heads []uint16, descs [][]byte, data []byte) []byte {
	b := []byte{flags, sizeExp, byte(start), byte(start >> 8), byte(len(heads))}
	for _, h := range heads {
		b = binary.LittleEndian.AppendUint16(b, h)
	}
	for _, d := range descs {
		b = append(b, d...)
	}
	return append(b, data...)
}

// FuzzPop: whatever the driver writes in the rings, Pop returns chains
// inside guest memory or a needs-reset error, never panics, and ends.
func FuzzPop(f *testing.F) {
	// A header/data/status chain and a single buffer.
	f.Add(seed(rawAddrs, 2, 0, []uint16{0, 3}, [][]byte{
		desc(dataGPA, 16, descNext, 1), desc(dataGPA+16, 4096, descNext|descWrite, 2), desc(dataGPA+8192, 1, descWrite, 0),
		desc(dataGPA+100, 512, 0, 0)}, nil))
	// An indirect chain, near the index wrap, with EVENT_IDX.
	ind := append(append(desc(dataGPA+0x100, 16, descNext, 1), desc(dataGPA+0x200, 512, descNext|descWrite, 2)...), desc(dataGPA+0x400, 1, descWrite, 0)...)
	f.Add(seed(rawAddrs|indFeat|eventFeat|doNotify, 3, 0xfffe, []uint16{1, 0, 1}, [][]byte{
		desc(dataGPA+0x80, 16, 0, 0), desc(dataGPA, uint32(len(ind)), descIndirect, 0)}, ind))
	// A loop, and a chain through every descriptor.
	f.Add(seed(rawAddrs, 1, 7, []uint16{0}, [][]byte{desc(dataGPA, 8, descNext, 1), desc(dataGPA, 8, descNext, 2), desc(dataGPA, 8, descNext, 3), desc(dataGPA, 8, descNext, 0)}, nil))
	f.Add(seed(indFeat|eventFeat, 4, 100, []uint16{5, 1, 2, 3}, nil, make([]byte, 600)))

	m, err := guestmem.NewMemfd("fuzz", fuzzMem)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	mem, _ := m.Slice(0, fuzzMem)
	f.Fuzz(func(t *testing.T, in []byte) {
		size, features, start, ok := fuzzInput(mem, in)
		if !ok {
			return
		}
		q, err := New(m, size, descGPA, availGPA, usedGPA, features)
		if err != nil {
			t.Fatal(err)
		}
		q.SetNextAvail(start)
		var c Chain
		for i := 0; i < 2*int(size)+2; i++ {
			if in[0]&doNotify != 0 && i%2 == 0 {
				q.DisableNotify()
			}
			ok, err := q.PopInto(&c)
			if err != nil {
				if !errors.Is(err, ErrNeedsReset) {
					t.Fatalf("Pop error %v does not wrap ErrNeedsReset", err)
				}
				if ok2, err2 := q.PopInto(&c); ok2 || err2 == nil {
					t.Fatal("broken queue popped again")
				}
				return
			}
			if in[0]&doNotify != 0 {
				q.EnableNotify()
			}
			if !ok {
				return
			}
			if c.Head >= size {
				t.Fatalf("head %d of a %d-entry queue", c.Head, size)
			}
			for _, b := range append(c.Out, c.In...) {
				if !inside(mem, b) || len(b) == 0 {
					t.Fatalf("buffer of %d bytes outside guest memory or empty", len(b))
				}
			}
			q.Push(c.Head, uint32(c.InLen()))
		}
		if i := q.NextAvail() - start; i > size {
			t.Fatalf("popped %d chains from a %d-entry queue", i, size)
		}
	})
}
