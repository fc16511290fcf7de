package virtq

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// Inflight tracking (vhost-user's INFLIGHT_SHMFD, split rings): a region
// the front end keeps across the back end's death records which chains
// the device took and has not returned, so that a back end started in its
// place serves exactly those again, in the order they were taken, however
// out of order the dead one completed them. The region of one queue is
// struct QueueRegionSplit of docs/interop/vhost-user.rst, little endian:
//
//	u64 features; u16 version; u16 desc_num; u16 last_batch_head; u16 used_idx;
//	desc[desc_num] { u8 inflight; u8 pad[5]; u16 next; u64 counter }
const (
	inflightHeader  = 16
	inflightDesc    = 16
	inflightVersion = 1
	// InflightAlign is the alignment of each queue's region in the
	// shared file (libvhost-user's INFLIGHT_ALIGNMENT).
	InflightAlign = 64
)

// InflightRegionSize is the bytes one queue of size entries takes in the
// inflight file, aligned so that queue i starts at i times it.
func InflightRegionSize(size uint16) int {
	n := inflightHeader + inflightDesc*int(size)
	return (n + InflightAlign - 1) &^ (InflightAlign - 1)
}

type inflight struct {
	r       []byte
	counter uint64
}

func (f *inflight) desc(head uint16) []byte {
	o := inflightHeader + inflightDesc*int(head)
	return f.r[o : o+inflightDesc]
}

// TrackInflight makes q record the chains it takes and returns in region
// (the queue's part of the inflight file), recovering first what a
// previous device left there: the chains in flight when it stopped are
// the next ones Pop returns, oldest first, and the next available entry
// is the one after them (the used index plus their count), whatever
// SetNextAvail said. Call it before the first Pop; it returns how many
// chains will be resubmitted. A region that was never used is set up.
func (q *Queue) TrackInflight(region []byte) (int, error) {
	if len(region) < inflightHeader+inflightDesc*int(q.size) {
		return 0, fmt.Errorf("virtqueue: inflight region of %d bytes for a queue of %d", len(region), q.size)
	}
	le := binary.LittleEndian
	f := &inflight{r: region}
	q.popMu.Lock()
	defer q.popMu.Unlock()
	q.pushMu.Lock()
	defer q.pushMu.Unlock()
	if le.Uint16(region[8:]) == 0 {
		clear(region[:inflightHeader+inflightDesc*int(q.size)])
		le.PutUint16(region[8:], inflightVersion)
		le.PutUint16(region[10:], q.size)
		le.PutUint16(region[14:], q.usedIdx)
		q.inflight, q.resubmit = f, nil
		return 0, nil
	}
	if v, n := le.Uint16(region[8:]), le.Uint16(region[10:]); v != inflightVersion || n != q.size {
		return 0, fmt.Errorf("virtqueue: inflight region version %d for %d entries, not version %d for %d", v, n, inflightVersion, q.size)
	}
	if le.Uint16(region[14:]) != q.usedIdx {
		// The device died between publishing a used entry and
		// recording it: that chain is done.
		if h := le.Uint16(region[12:]); h < q.size {
			f.desc(h)[0] = 0
		}
		le.PutUint16(region[14:], q.usedIdx)
	}
	type taken struct {
		head    uint16
		counter uint64
	}
	var open []taken
	for h := range q.size {
		d := f.desc(h)
		if d[0] == 1 {
			c := le.Uint64(d[8:])
			open = append(open, taken{h, c})
			f.counter = max(f.counter, c+1)
		}
	}
	slices.SortFunc(open, func(a, b taken) int {
		switch {
		case a.counter < b.counter:
			return -1
		case a.counter > b.counter:
			return 1
		}
		return 0
	})
	q.resubmit = q.resubmit[:0]
	for _, t := range open {
		q.resubmit = append(q.resubmit, t.head)
	}
	q.inflight = f
	q.lastAvail = q.usedIdx + uint16(len(open))
	return len(open), nil
}

// took records head as taken (called with popMu held).
func (f *inflight) took(q *Queue, head uint16) {
	d := f.desc(head)
	binary.LittleEndian.PutUint64(d[8:], f.counter)
	f.counter++
	q.fence()
	d[0] = 1
}

// returning links head into the last batch before the used index moves
// (called with pushMu held).
func (f *inflight) returning(q *Queue, head uint16) {
	le := binary.LittleEndian
	le.PutUint16(f.desc(head)[6:], le.Uint16(f.r[12:]))
	le.PutUint16(f.r[12:], head)
	q.fence()
}

// returned records head as done once the used index published it.
func (f *inflight) returned(q *Queue, head uint16) {
	q.fence()
	f.desc(head)[0] = 0
	q.fence()
	binary.LittleEndian.PutUint16(f.r[14:], q.usedIdx)
}
