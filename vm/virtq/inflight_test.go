package virtq_test

import (
	"encoding/binary"
	"slices"
	"testing"

	"minivmm/vm/virtq"
	"minivmm/vm/virtq/virtqtest"
)

// TestInflightRecovery: a device that dies with chains taken and not
// returned (completed out of order) is followed by one that takes exactly
// those again, oldest first, and then the ring's next entries; a death
// between publishing a used entry and recording it does not resubmit it.
func TestInflightRecovery(t *testing.T) {
	for _, tc := range []struct {
		name      string
		torn      bool // the last Push published its entry but did not record it
		wantAgain []int
	}{
		{"clean", false, []int{0, 2, 3}},
		{"died mid-push", true, []int{0, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 16
			d, q := setup(t, size, 0)
			region := make([]byte, virtq.InflightRegionSize(size))
			if n, err := q.TrackInflight(region); err != nil || n != 0 {
				t.Fatalf("fresh region: %d resubmitted, %v", n, err)
			}
			var heads []uint16
			for i := range 5 {
				h, ok := d.Add([]virtqtest.Buf{{GPA: d.Alloc(16), Len: 16}, {GPA: d.Alloc(1), Len: 1, Write: true}}, false)
				if !ok {
					t.Fatal("queue full")
				}
				heads = append(heads, h)
				if i == 4 {
					break // added, never taken
				}
				if c, ok, err := q.Pop(); err != nil || !ok || c.Head != h {
					t.Fatalf("pop %d: head %d ok %v err %v", i, c.Head, ok, err)
				}
			}
			// Out of order: the second request completes, then (torn)
			// the third's used entry is published but not recorded.
			q.Push(heads[1], 1)
			if tc.torn {
				saved := slices.Clone(region)
				q.Push(heads[2], 1)
				// Undo the record of the last Push, keeping the
				// link into the batch: as if the device died there.
				le := binary.LittleEndian
				le.PutUint16(region[14:], le.Uint16(saved[14:]))
				region[16+16*int(heads[2])] = 1
			}
			// The next device, on the same rings and region.
			q2, err := d.Queue()
			if err != nil {
				t.Fatal(err)
			}
			q2.SetNextAvail(0) // what a front end that lost the device sends: ignored
			n, err := q2.TrackInflight(region)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(tc.wantAgain) {
				t.Fatalf("%d chains resubmitted, want %d", n, len(tc.wantAgain))
			}
			var got []uint16
			for {
				c, ok, err := q2.Pop()
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				got = append(got, c.Head)
				q2.Push(c.Head, 1)
			}
			var want []uint16
			for _, i := range tc.wantAgain {
				want = append(want, heads[i])
			}
			want = append(want, heads[4])
			if !slices.Equal(got, want) {
				t.Fatalf("taken %v, want %v", got, want)
			}
			// All returned: a third device resubmits nothing.
			q3, err := d.Queue()
			if err != nil {
				t.Fatal(err)
			}
			if n, err := q3.TrackInflight(region); err != nil || n != 0 {
				t.Fatalf("after all returned: %d resubmitted, %v", n, err)
			}
			if q3.NextAvail() != q2.NextAvail() {
				t.Fatalf("next available %d, want %d", q3.NextAvail(), q2.NextAvail())
			}
		})
	}
}

func TestInflightRegionRefused(t *testing.T) {
	_, q := setup(t, 8, 0)
	if _, err := q.TrackInflight(make([]byte, 16)); err == nil {
		t.Fatal("short region accepted")
	}
	r := make([]byte, virtq.InflightRegionSize(8))
	binary.LittleEndian.PutUint16(r[8:], 1)
	binary.LittleEndian.PutUint16(r[10:], 16) // another queue size
	if _, err := q.TrackInflight(r); err == nil {
		t.Fatal("region for another queue size accepted")
	}
}

// FuzzInflight: whatever a front end left in the inflight region (it is
// shared memory it can write), recovery and the pops after it neither
// panic nor take a chain outside the queue.
func FuzzInflight(f *testing.F) {
	const size = 16
	good := make([]byte, virtq.InflightRegionSize(size))
	binary.LittleEndian.PutUint16(good[8:], 1)
	binary.LittleEndian.PutUint16(good[10:], size)
	good[16] = 1
	f.Add(good, uint16(0))
	f.Add(make([]byte, 8), uint16(3))
	f.Fuzz(func(t *testing.T, region []byte, used uint16) {
		d, q := setup(t, size, 0)
		for range 3 {
			if _, ok := d.Add([]virtqtest.Buf{{GPA: d.Alloc(16), Len: 16}, {GPA: d.Alloc(1), Len: 1, Write: true}}, false); !ok {
				t.Fatal("queue full")
			}
		}
		d.SetUsedIdx(used)
		q, err := d.Queue()
		if err != nil {
			t.Fatal(err)
		}
		n, err := q.TrackInflight(region)
		if err != nil {
			return
		}
		if n > size {
			t.Fatalf("%d chains to resubmit on a queue of %d", n, size)
		}
		for range 2 * size {
			c, ok, err := q.Pop()
			if err != nil || !ok {
				return
			}
			if c.Head >= size {
				t.Fatalf("head %d", c.Head)
			}
			q.Push(c.Head, 0)
		}
	})
}
