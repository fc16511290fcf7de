package virtioblk

import (
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"

	"minivmm/vm/guestmem"
	"minivmm/vm/virtq"
)

// FuzzServe drives the whole device from a fuzzed ring: descriptor table,
// available entries and the bytes buffers point at (headers, segments)
// all come from the input. Serve either serves what it takes, touching
// the disk only inside it, or puts the device in needs-reset; it ends,
// and never panics.
func FuzzServe(f *testing.F) {
	const (
		memSize = 64 << 10
		desc    = 0x0
		avail   = 0x1000
		used    = 0x2000
		data    = 0x3000
		size    = 16
	)
	le := binary.LittleEndian
	d16 := func(addr uint64, n uint32, flags, next uint16) []byte {
		b := make([]byte, 16)
		le.PutUint64(b, addr)
		le.PutUint32(b[8:], n)
		le.PutUint16(b[12:], flags)
		le.PutUint16(b[14:], next)
		return b
	}
	// [features][avail count][heads: 2 bytes each][16 descriptors][data]
	seed := func(feat byte, heads []uint16, descs [][]byte, payload []byte) []byte {
		b := []byte{feat, byte(len(heads))}
		for _, h := range heads {
			b = le.AppendUint16(b, h)
		}
		for i := range size {
			if i < len(descs) {
				b = append(b, descs[i]...)
			} else {
				b = append(b, make([]byte, 16)...)
			}
		}
		return append(b, payload...)
	}
	hdrIn, hdrOut := hdr(TypeIn, 8), hdr(TypeOut, 16)
	seg := make([]byte, 16)
	le.PutUint64(seg, 8)
	le.PutUint32(seg[8:], 8)
	zeroes := append(hdr(TypeWriteZeroes, 0), seg...)
	f.Add(seed(3, []uint16{0, 3}, [][]byte{
		d16(data, 16, 1, 1), d16(data+0x100, 4096, 3, 2), d16(data+0x2000, 1, 2, 0),
		d16(data+16, 16, 1, 4), d16(data+0x3000, 512, 1, 5), d16(data+0x2001, 1, 2, 0),
	}, append(append(append([]byte(nil), hdrIn...), hdrOut...), make([]byte, 64)...)))
	f.Add(seed(1, []uint16{0}, [][]byte{d16(data+0x400, 48, 4, 0)},
		append(append(append(zeroes, make([]byte, 0x400-len(zeroes))...), d16(data, 32, 1, 1)...), d16(data+0x2000, 1, 2, 0)...)))
	f.Add(seed(0, []uint16{0, 0}, [][]byte{d16(data, 16, 1, 1), d16(data+0x2000, 1, 2, 0)}, hdrIn))

	m, err := guestmem.NewMemfd("fuzz-serve", memSize)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	mem, _ := m.Slice(0, memSize)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 2 {
			return
		}
		clear(mem)
		var features uint64 = virtq.FeatureVersion1
		if in[0]&1 != 0 {
			features |= virtq.FeatureIndirectDesc
		}
		if in[0]&2 != 0 {
			features |= virtq.FeatureEventIdx
		}
		count := uint16(in[1])
		in = in[2:]
		le.PutUint16(mem[avail+2:], count)
		for i := uint16(0); i < count && len(in) >= 2; i++ {
			le.PutUint16(mem[avail+4+2*int(i%size):], le.Uint16(in))
			in = in[2:]
		}
		for i := 0; i < size && len(in) >= 16; i++ {
			copy(mem[desc+16*i:], in[:16])
			// Addresses in [0, 2*RAM): half land inside.
			le.PutUint64(mem[desc+16*i:], le.Uint64(in)%(2*memSize))
			le.PutUint32(mem[desc+16*i+8:], le.Uint32(in[8:])%0x2000)
			in = in[16:]
		}
		copy(mem[data:], in)
		disk := &memDisk{t: t, data: make([]byte, 64<<10)}
		dev, err := New(disk, Config{Serial: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		if err := dev.Ack(features | FeatureFlush); err != nil {
			t.Fatal(err)
		}
		q, err := virtq.New(m, size, desc, avail, used, features)
		if err != nil {
			t.Fatal(err)
		}
		// A ring whose requests write into the ring itself can keep
		// Serve taking requests for ever (the device's completions are
		// the driver's additions); Stop ends that, and must.
		finished := make(chan struct{})
		go func() {
			select {
			case <-finished:
				return
			case <-time.After(50 * time.Millisecond):
			}
			dev.Stop()
			select {
			case <-finished:
			case <-time.After(10 * time.Second):
				buf := make([]byte, 1<<20)
				panic("Serve or Drain hangs after Stop:\n" + string(buf[:runtime.Stack(buf, true)]))
			}
		}()
		err = dev.Serve(q, func() {})
		dev.Drain()
		close(finished)
		if err != nil && !errors.Is(err, virtq.ErrNeedsReset) {
			t.Fatalf("Serve: %v does not wrap ErrNeedsReset", err)
		}
		if dev.InFlight() != 0 {
			t.Fatal("requests in flight after Drain")
		}
		// What the used ring holds may be a request's data (a buffer
		// may cover the ring): nothing to count there.
	})
}
