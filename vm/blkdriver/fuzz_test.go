package blkdriver

import (
	"encoding/binary"
	"testing"
)

// fakeDevice is a transport whose "device" is the test: it never serves
// a ring, the test writes the used ring itself.
type fakeDevice struct {
	features uint64
	rings    map[int]RingAddr
	irq      chan struct{}
}

func (f *fakeDevice) DeviceFeatures() (uint64, error) { return f.features, nil }
func (f *fakeDevice) SetFeatures(uint64) error        { return nil }
func (f *fakeDevice) Config() ([]byte, error) {
	c := make([]byte, 60)
	binary.LittleEndian.PutUint64(c, 2048)
	binary.LittleEndian.PutUint16(c[34:], 1)
	return c, nil
}
func (f *fakeDevice) MaxQueueSize(q int) int {
	if q == 0 {
		return 16 // room for 3 requests of 4 descriptors without INDIRECT
	}
	return 0
}
func (f *fakeDevice) SetupQueue(q int, r RingAddr) error { f.rings[q] = r; return nil }
func (f *fakeDevice) Start() error                       { return nil }
func (f *fakeDevice) Kick(int)                           {}
func (f *fakeDevice) Interrupt(int) <-chan struct{}      { return f.irq }
func (f *fakeDevice) Reset() error                       { return nil }

// FuzzUsedRing: whatever a device writes in the used ring (indexes out
// of range, heads never made available, the same head twice, an index
// far ahead), the driver neither panics nor completes a request twice;
// what it does not understand it reports as an error.
func FuzzUsedRing(f *testing.F) {
	f.Add(uint16(1), []byte{0, 0, 0, 0, 1, 0, 0, 0})
	f.Add(uint16(3), []byte{0, 0, 0, 0, 0, 2, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0})
	f.Add(uint16(0x8000), []byte{200, 0, 0, 0, 0, 0, 0, 0})
	f.Add(uint16(2), []byte{9, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, usedIdx uint16, entries []byte) {
		for _, refuse := range []uint64{0, Bit(FeatIndirect) | Bit(FeatEventIdx)} {
			dev := &fakeDevice{features: Bit(FeatVersion1) | Bit(FeatIndirect) | Bit(FeatEventIdx), rings: map[int]RingAddr{}, irq: make(chan struct{})}
			mem := NewMemory(make([]byte, 1<<16), 0)
			d, err := Open(dev, mem, Options{Refuse: refuse})
			if err != nil {
				t.Fatal(err)
			}
			q := d.Queues()[0]
			buf, _ := mem.Alloc(1024, 512)
			done := map[*Request]int{}
			var reqs []*Request
			for i := 0; i < 3; i++ {
				r := &Request{Type: TypeIn, Sector: uint64(i), Data: []Region{buf.Sub(0, 512), buf.Sub(512, 512)},
					Done: func(r *Request) { done[r]++ }}
				reqs = append(reqs, r)
			}
			if err := q.Submit(reqs...); err != nil {
				t.Fatal(err)
			}
			used := q.used.B
			n := min(len(entries)/8, int(q.size))
			copy(used[4:4+8*n], entries[:8*n])
			binary.LittleEndian.PutUint16(used[2:], usedIdx)
			q.Reap()
			for r, k := range done {
				if k != 1 {
					t.Fatalf("request %d completed %d times", r.Sector, k)
				}
			}
			completed := len(done)
			if int(usedIdx) > int(q.size) && q.Err() == nil {
				t.Fatalf("used index %d past a queue of %d: no error", usedIdx, q.size)
			}
			if completed > 3 {
				t.Fatalf("%d completions for 3 requests", completed)
			}
			// The device is reset: whatever it did not complete fails once.
			close(q.stop)
			<-q.stopped
			q.failInFlight()
			for _, r := range reqs {
				if done[r] != 1 {
					t.Fatalf("request %d: %d completions after the reset", r.Sector, done[r])
				}
			}
			d.freeQueues()
			if mem.FreeBytes() != 1<<16-1024 {
				t.Fatalf("rings not given back: %d free", mem.FreeBytes())
			}
		}
	})
}
