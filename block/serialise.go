package block

import (
	"slices"
	"sync"
	"sync/atomic"
)

// Serialising requests (QEMU's BDRV_REQ_SERIALISING, which block-stream's
// copy-on-read uses): a job that copies into a node data it read from
// below it must not overwrite what a writer put there after the read.
// While a job serialises on a node, every write to the node holds its
// range against the job's copy: a copy waits for the writes in flight
// on its range, and they for it. When no job serialises (nearly always),
// a write pays two atomic adds.

// Serialised marks a write as made by the holder of a [Node.Serialise]
// range over it: it does not wait for that range.
const Serialised WriteFlags = 1 << 8

type serialiser struct {
	active atomic.Int32 // jobs serialising on the node
	fast   atomic.Int64 // writes in flight that took no range

	mu     sync.Mutex
	cond   sync.Cond
	ranges []serialRange
}

type serialRange struct{ off, end int64 }

// writeBegin is a write's entry: it returns the function that ends it.
func (s *serialiser) writeBegin(off, length int64) (end func()) {
	s.fast.Add(1)
	if s.active.Load() == 0 {
		return s.fastEnd
	}
	s.fastEnd()
	return s.lock(off, length)
}

func (s *serialiser) fastEnd() {
	if s.fast.Add(-1) == 0 && s.active.Load() > 0 {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

// lock holds [off, off+length) once no other holder overlaps it.
func (s *serialiser) lock(off, length int64) (unlock func()) {
	return s.lockRanges(serialRange{off, off + length})
}

// lockRanges holds every non-empty range of rs at once, once no other
// holder overlaps any of them.
func (s *serialiser) lockRanges(rs ...serialRange) (unlock func()) {
	rs = slices.DeleteFunc(rs, func(r serialRange) bool { return r.off >= r.end })
	s.mu.Lock()
	if s.cond.L == nil {
		s.cond.L = &s.mu
	}
	for slices.ContainsFunc(rs, s.overlaps) {
		s.cond.Wait()
	}
	s.ranges = append(s.ranges, rs...)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		for _, r := range rs {
			if i := slices.Index(s.ranges, r); i >= 0 {
				s.ranges = slices.Delete(s.ranges, i, i+1)
			}
		}
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

func (s *serialiser) overlaps(r serialRange) bool {
	for _, x := range s.ranges {
		if x.off < r.end && r.off < x.end {
			return true
		}
	}
	return false
}

// Serialise starts serialising writes to n against a job's copies: from
// its return, every write to n holds its range, and no write that did
// not is still in flight. The job then takes each range it copies with
// SerialiseRange and writes it with [Serialised]. end stops it.
func (n *Node) Serialise() (end func()) {
	s := &n.serial
	s.mu.Lock()
	if s.cond.L == nil {
		s.cond.L = &s.mu
	}
	s.active.Add(1)
	for s.fast.Load() > 0 {
		s.cond.Wait()
	}
	s.mu.Unlock()
	return sync.OnceFunc(func() { s.active.Add(-1) })
}

// serialiseRMW makes a read-modify-write of [off, end) a serialising
// request (QEMU's bdrv_make_request_serialising): it waits for every
// write in flight on its range, and writes to the range wait for it,
// for as long as unlock is not called. Its caller may already hold
// [held.off, held.end) (a job's Serialised write): that part is not
// taken again.
func (s *serialiser) serialiseRMW(off, end int64, held serialRange) (unlock func()) {
	s.mu.Lock()
	if s.cond.L == nil {
		s.cond.L = &s.mu
	}
	s.active.Add(1)
	for s.fast.Load() > 0 {
		s.cond.Wait()
	}
	s.mu.Unlock()
	var release func()
	if held.off < held.end {
		release = s.lockRanges(serialRange{off, min(end, held.off)}, serialRange{max(off, held.end), end})
	} else {
		release = s.lockRanges(serialRange{off, end})
	}
	return func() {
		release()
		s.active.Add(-1)
	}
}

// SerialiseRange holds [off, off+length) of n against writes (n must be
// serialising): writes to it in flight have ended, and new ones wait for
// unlock.
func (n *Node) SerialiseRange(off, length int64) (unlock func()) {
	return n.serial.lock(off, length)
}
