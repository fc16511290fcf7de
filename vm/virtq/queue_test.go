package virtq_test

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"minivmm/internal/fdtest"
	"minivmm/vm/guestmem"
	"minivmm/vm/virtq"
	"minivmm/vm/virtq/virtqtest"
)

const memSize = 4 << 20

func memory(t testing.TB) *guestmem.Memory {
	t.Helper()
	fdtest.Check(t)
	m, err := guestmem.NewMemfd("virtq-test", memSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m
}

func setup(t testing.TB, size uint16, features uint64) (*virtqtest.Driver, *virtq.Queue) {
	t.Helper()
	m := memory(t)
	d := virtqtest.New(m, size, 0x1000, memSize, features)
	q, err := d.Queue()
	if err != nil {
		t.Fatal(err)
	}
	return d, q
}

// fill writes a recognisable pattern into guest memory at gpa.
func fill(d *virtqtest.Driver, gpa uint64, n int, seed byte) []byte {
	b := d.Bytes(gpa, uint64(n))
	for i := range b {
		b[i] = seed + byte(i)
	}
	return append([]byte(nil), b...)
}

func flat(bufs [][]byte) []byte { return bytes.Join(bufs, nil) }

// TestPopChains: direct and indirect chains come back as the slices of
// guest memory the descriptors name, readable ones first, in order; the
// used element carries the head and the written length.
func TestPopChains(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		indirect bool
		lens     []uint32
		writes   []bool
	}{
		{"one readable", 0, false, []uint32{16}, []bool{false}},
		{"header data status", 0, false, []uint32{16, 4096, 1}, []bool{false, true, true}},
		{"many", 0, false, []uint32{16, 512, 512, 512, 1000, 3, 1}, []bool{false, false, false, false, true, true, true}},
		{"indirect", virtq.FeatureIndirectDesc, true, []uint32{16, 8192, 1}, []bool{false, true, true}},
		{"indirect, longer than the queue", virtq.FeatureIndirectDesc, true, make([]uint32, 40), make([]bool, 40)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, q := setup(t, 8, tc.features)
			var bufs []virtqtest.Buf
			var wantOut, wantIn []byte
			for i, l := range tc.lens {
				if l == 0 {
					l = uint32(7 + i)
				}
				gpa := d.Alloc(uint64(l))
				data := fill(d, gpa, int(l), byte(i*31))
				bufs = append(bufs, virtqtest.Buf{GPA: gpa, Len: l, Write: tc.writes[i]})
				if tc.writes[i] {
					wantIn = append(wantIn, data...)
				} else {
					wantOut = append(wantOut, data...)
				}
			}
			head, ok := d.Add(bufs, tc.indirect)
			if !ok {
				t.Fatal("driver out of descriptors")
			}
			c, ok, err := q.Pop()
			if err != nil || !ok {
				t.Fatalf("Pop: %v, %v", ok, err)
			}
			if c.Head != head || !bytes.Equal(flat(c.Out), wantOut) || !bytes.Equal(flat(c.In), wantIn) {
				t.Fatalf("chain %d: out %d bytes, in %d bytes; want head %d, %d and %d", c.Head, len(flat(c.Out)), len(flat(c.In)), head, len(wantOut), len(wantIn))
			}
			// The slices are guest memory itself, not copies.
			if len(c.In) > 0 {
				c.In[0][0] ^= 0xff
				if got := d.Bytes(bufs[len(c.Out)].GPA, 1)[0]; got != wantIn[0]^0xff {
					t.Fatalf("write through the slice did not reach guest memory")
				}
			}
			if _, ok, err := q.Pop(); ok || err != nil {
				t.Fatalf("second Pop: %v, %v", ok, err)
			}
			q.Push(c.Head, uint32(c.InLen()))
			h, n, ok := d.Used()
			if !ok || h != head || n != uint32(len(wantIn)) {
				t.Fatalf("used element %d/%d/%v, want %d/%d", h, n, ok, head, len(wantIn))
			}
		})
	}
}

// TestWrapAround: the 16-bit indices wrap (from just below 65536) with
// the ring full at every step, and nothing is lost or taken twice.
func TestWrapAround(t *testing.T) {
	for _, start := range []uint16{0, 0xfff0, 0xffff} {
		d, _ := setup(t, 4, 0)
		d.SetAvailIdx(start)
		d.SetUsedIdx(start)
		q, err := d.Queue()
		if err != nil {
			t.Fatal(err)
		}
		q.SetNextAvail(start)
		buf := d.Alloc(64)
		for round := 0; round < 200; round++ {
			var heads []uint16
			for {
				h, ok := d.Add([]virtqtest.Buf{{GPA: buf, Len: 64}}, false)
				if !ok {
					break
				}
				heads = append(heads, h)
			}
			if len(heads) != 4 {
				t.Fatalf("start %#x round %d: %d chains fit, want 4", start, round, len(heads))
			}
			for i := range heads {
				c, ok, err := q.Pop()
				if err != nil || !ok || c.Head != heads[i] {
					t.Fatalf("start %#x round %d: Pop %d: %v %v head %d want %d", start, round, i, ok, err, c.Head, heads[i])
				}
			}
			for i := len(heads) - 1; i >= 0; i-- {
				q.Push(heads[i], 0)
			}
			for i := range heads {
				h, _, ok := d.Used()
				if !ok || h != heads[len(heads)-1-i] {
					t.Fatalf("start %#x round %d: used %d: %d %v", start, round, i, h, ok)
				}
			}
		}
		if got, want := q.NextAvail(), start+800; got != want {
			t.Fatalf("NextAvail %#x, want %#x", got, want)
		}
	}
}

// TestEventIdx: with EVENT_IDX, Push asks for an interrupt exactly when
// the used index passes used_event, and Pop tells the driver where to
// kick next (avail_event), unless notifications are off.
func TestEventIdx(t *testing.T) {
	d, q := setup(t, 16, virtq.FeatureEventIdx)
	buf := d.Alloc(16)
	var heads []uint16
	for range 10 {
		h, _ := d.Add([]virtqtest.Buf{{GPA: buf, Len: 16}}, false)
		heads = append(heads, h)
	}
	for i := range 3 {
		if _, ok, err := q.Pop(); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if got := d.AvailEvent(); got != uint16(i+1) {
			t.Fatalf("avail_event after %d pops: %d", i+1, got)
		}
	}
	q.DisableNotify()
	for range 7 {
		if _, ok, err := q.Pop(); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if got := d.AvailEvent(); got != 3 {
		t.Fatalf("avail_event moved while notifications were off: %d", got)
	}
	if more := q.EnableNotify(); more || d.AvailEvent() != 10 {
		t.Fatalf("EnableNotify: more %v, avail_event %d; want false, 10", more, d.AvailEvent())
	}
	// The driver wants to hear when the used index passes 4 (element 4
	// used, index 5), then 6 after it has seen that.
	d.SetUsedEvent(4)
	var got []int
	for i, h := range heads {
		if i == 6 {
			d.SetUsedEvent(6)
		}
		if q.Push(h, 0) {
			got = append(got, i)
		}
	}
	// The first Push always notifies (nothing was signalled before).
	if want := []int{0, 4, 6}; !equalInts(got, want) {
		t.Fatalf("notified after pushes %v, want %v", got, want)
	}
	// used_event left behind: no more interrupts until the driver
	// moves it; moved to the index now, the next Push interrupts.
	for _, event := range []uint16{6, 11} {
		d.SetUsedEvent(event)
		h, _ := d.Add([]virtqtest.Buf{{GPA: buf, Len: 16}}, false)
		if _, ok, err := q.Pop(); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if got := q.Push(h, 0); got != (event == 11) {
			t.Fatalf("used_event %d, used index 10 -> %d: notify %v", event, q.UsedIdx(), got)
		}
	}
	if more := q.EnableNotify(); more {
		t.Fatal("EnableNotify reports entries that are not there")
	}
	d.Add([]virtqtest.Buf{{GPA: buf, Len: 16}}, false)
	q.DisableNotify()
	if more := q.EnableNotify(); !more {
		t.Fatal("EnableNotify missed an entry added while notifications were off")
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestNotifyFlags: without EVENT_IDX the device asks for no kicks with
// the used ring's NO_NOTIFY, and the driver for no interrupts with the
// available ring's NO_INTERRUPT.
func TestNotifyFlags(t *testing.T) {
	d, q := setup(t, 8, 0)
	buf := d.Alloc(16)
	q.DisableNotify()
	if d.UsedFlags() != 1 {
		t.Fatalf("used flags %d after DisableNotify", d.UsedFlags())
	}
	if q.EnableNotify() || d.UsedFlags() != 0 {
		t.Fatalf("used flags %d after EnableNotify", d.UsedFlags())
	}
	for _, flags := range []uint16{0, 1} {
		d.SetAvailFlags(flags)
		h, _ := d.Add([]virtqtest.Buf{{GPA: buf, Len: 16}}, false)
		q.Pop()
		if got := q.Push(h, 0); got != (flags == 0) {
			t.Fatalf("avail flags %d: notify %v", flags, got)
		}
	}
}

// TestBadChains: every malformed ring is an error wrapping
// ErrNeedsReset, and the queue stays broken; none panics or hangs.
func TestBadChains(t *testing.T) {
	const ind = virtq.FeatureIndirectDesc
	for _, tc := range []struct {
		name     string
		features uint64
		build    func(d *virtqtest.Driver)
		addrErr  bool
	}{
		{"descriptor outside guest memory", 0, func(d *virtqtest.Driver) {
			d.WriteDesc(d.DescGPA, 0, memSize-8, 16, 0, 0)
			d.Publish(0)
		}, true},
		{"descriptor address wraps", 0, func(d *virtqtest.Driver) {
			d.WriteDesc(d.DescGPA, 0, ^uint64(0)-4, 16, 0, 0)
			d.Publish(0)
		}, true},
		{"loop", 0, func(d *virtqtest.Driver) {
			b := d.Alloc(16)
			d.WriteDesc(d.DescGPA, 0, b, 16, virtqtest.DescNext, 1)
			d.WriteDesc(d.DescGPA, 1, b, 16, virtqtest.DescNext, 0)
			d.Publish(0)
		}, false},
		{"self loop", 0, func(d *virtqtest.Driver) {
			d.WriteDesc(d.DescGPA, 3, d.Alloc(16), 16, virtqtest.DescNext, 3)
			d.Publish(3)
		}, false},
		{"loop in an indirect table", ind, func(d *virtqtest.Driver) {
			t := d.Alloc(64)
			b := d.Alloc(16)
			for i := uint16(0); i < 4; i++ {
				d.WriteDesc(t, i, b, 16, virtqtest.DescNext, (i+1)%4)
			}
			d.WriteDesc(d.DescGPA, 0, t, 64, virtqtest.DescIndirect, 0)
			d.Publish(0)
		}, false},
		{"next outside the table", 0, func(d *virtqtest.Driver) {
			d.WriteDesc(d.DescGPA, 0, d.Alloc(16), 16, virtqtest.DescNext, 8)
			d.Publish(0)
		}, false},
		{"head outside the table", 0, func(d *virtqtest.Driver) { d.Publish(9) }, false},
		{"available index moved more than the queue size", 0, func(d *virtqtest.Driver) {
			d.WriteDesc(d.DescGPA, 0, d.Alloc(16), 16, 0, 0)
			d.SetAvailIdx(9)
		}, false},
		{"readable after writable", 0, func(d *virtqtest.Driver) {
			b := d.Alloc(16)
			d.WriteDesc(d.DescGPA, 0, b, 16, virtqtest.DescNext|virtqtest.DescWrite, 1)
			d.WriteDesc(d.DescGPA, 1, b, 16, 0, 0)
			d.Publish(0)
		}, false},
		{"zero length", 0, func(d *virtqtest.Driver) {
			d.WriteDesc(d.DescGPA, 0, d.Alloc(16), 0, 0, 0)
			d.Publish(0)
		}, false},
		{"indirect not negotiated", 0, func(d *virtqtest.Driver) {
			t := d.Alloc(16)
			d.WriteDesc(t, 0, d.Alloc(16), 16, 0, 0)
			d.WriteDesc(d.DescGPA, 0, t, 16, virtqtest.DescIndirect, 0)
			d.Publish(0)
		}, false},
		{"nested indirect", ind, func(d *virtqtest.Driver) {
			t := d.Alloc(16)
			d.WriteDesc(t, 0, t, 16, virtqtest.DescIndirect, 0)
			d.WriteDesc(d.DescGPA, 0, t, 16, virtqtest.DescIndirect, 0)
			d.Publish(0)
		}, false},
		{"indirect with next", ind, func(d *virtqtest.Driver) {
			t := d.Alloc(16)
			d.WriteDesc(t, 0, d.Alloc(16), 16, 0, 0)
			d.WriteDesc(d.DescGPA, 0, t, 16, virtqtest.DescIndirect|virtqtest.DescNext, 1)
			d.WriteDesc(d.DescGPA, 1, d.Alloc(16), 16, 0, 0)
			d.Publish(0)
		}, false},
		{"indirect not at the head", ind, func(d *virtqtest.Driver) {
			t := d.Alloc(16)
			d.WriteDesc(t, 0, d.Alloc(16), 16, 0, 0)
			d.WriteDesc(d.DescGPA, 0, d.Alloc(16), 16, virtqtest.DescNext, 1)
			d.WriteDesc(d.DescGPA, 1, t, 16, virtqtest.DescIndirect, 0)
			d.Publish(0)
		}, false},
		{"indirect table of a partial descriptor", ind, func(d *virtqtest.Driver) {
			t := d.Alloc(32)
			d.WriteDesc(d.DescGPA, 0, t, 24, virtqtest.DescIndirect, 0)
			d.Publish(0)
		}, false},
		{"empty indirect table", ind, func(d *virtqtest.Driver) {
			d.WriteDesc(d.DescGPA, 0, d.Alloc(16), 0, virtqtest.DescIndirect, 0)
			d.Publish(0)
		}, false},
		{"indirect table longer than allowed", ind, func(d *virtqtest.Driver) {
			t := d.Alloc(16 * 1025)
			b := d.Alloc(16)
			for i := uint16(0); i < 1025; i++ {
				d.WriteDesc(t, i, b, 16, virtqtest.DescNext, i+1)
			}
			d.WriteDesc(d.DescGPA, 0, t, 16*1025, virtqtest.DescIndirect, 0)
			d.Publish(0)
		}, false},
		{"indirect table outside guest memory", ind, func(d *virtqtest.Driver) {
			d.WriteDesc(d.DescGPA, 0, memSize-16, 32, virtqtest.DescIndirect, 0)
			d.Publish(0)
		}, true},
		{"indirect buffer outside guest memory", ind, func(d *virtqtest.Driver) {
			t := d.Alloc(16)
			d.WriteDesc(t, 0, 1<<40, 512, 0, 0)
			d.WriteDesc(d.DescGPA, 0, t, 16, virtqtest.DescIndirect, 0)
			d.Publish(0)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, q := setup(t, 8, tc.features)
			tc.build(d)
			for i := range 2 {
				_, ok, err := q.Pop()
				var qe *virtq.Error
				if ok || !errors.Is(err, virtq.ErrNeedsReset) || !errors.As(err, &qe) {
					t.Fatalf("Pop %d: ok %v, err %v; want a needs-reset *virtq.Error", i, ok, err)
				}
				var ae *guestmem.AddrError
				if errors.As(err, &ae) != tc.addrErr {
					t.Fatalf("Pop: %v: wraps an AddrError: %v, want %v", err, !tc.addrErr, tc.addrErr)
				}
			}
			if q.Err() == nil {
				t.Fatal("queue not marked broken")
			}
			if q.EnableNotify() {
				t.Fatal("a broken queue reports work")
			}
		})
	}
}

// TestRegionsSplit: a buffer that runs across two regions adjacent in
// guest-physical space comes back as two slices; one across a gap is an
// error.
func TestRegionsSplit(t *testing.T) {
	fdtest.Check(t)
	var specs []guestmem.RegionSpec
	for i, gpa := range []uint64{0, 1 << 20, 3 << 20} {
		a, err := guestmem.NewMemfd("part", 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := dup(a.Fd(0))
		a.Close()
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, guestmem.RegionSpec{Fd: fd, GPA: gpa, Size: 1 << 20, UserAddr: 0x7000_0000_0000 + uint64(i)<<30})
	}
	m, err := guestmem.Map(specs)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	d := virtqtest.New(m, 4, 0x1000, 1<<20, 0)
	q, err := d.Queue()
	if err != nil {
		t.Fatal(err)
	}
	d.WriteDesc(d.DescGPA, 0, 1<<20-100, 300, 0, 0)
	d.Publish(0)
	c, ok, err := q.Pop()
	if err != nil || !ok || len(c.Out) != 2 || len(c.Out[0]) != 100 || len(c.Out[1]) != 200 {
		t.Fatalf("Pop across adjacent regions: %v %v %d slices", ok, err, len(c.Out))
	}
	d.WriteDesc(d.DescGPA, 1, 2<<20-100, 300, 0, 0)
	d.Publish(1)
	if _, _, err := q.Pop(); !errors.Is(err, virtq.ErrNeedsReset) {
		t.Fatalf("Pop across a gap: %v", err)
	}
}

// TestConcurrentPush: completions from many goroutines all land in the
// used ring, once each.
func TestConcurrentPush(t *testing.T) {
	d, q := setup(t, 256, virtq.FeatureEventIdx)
	buf := d.Alloc(16)
	for range 256 {
		d.Add([]virtqtest.Buf{{GPA: buf, Len: 16}}, false)
	}
	var chains []virtq.Chain
	for {
		c, ok, err := q.Pop()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		chains = append(chains, c)
	}
	var wg sync.WaitGroup
	for _, c := range chains {
		wg.Go(func() { q.Push(c.Head, uint32(c.Head)) })
	}
	wg.Wait()
	seen := map[uint16]bool{}
	for {
		h, n, ok := d.Used()
		if !ok {
			break
		}
		if seen[h] || n != uint32(h) {
			t.Fatalf("used element %d (len %d) twice or wrong", h, n)
		}
		seen[h] = true
	}
	if len(seen) != 256 {
		t.Fatalf("%d used elements, want 256", len(seen))
	}
}
