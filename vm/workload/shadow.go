package workload

import "sync"

// Shadow is what a device's sectors should hold: the generation of the
// last write to complete on each (0: not written by a workload), and of a
// write in flight. A machine keeps one per device across workloads, so a
// read workload checks what an earlier write workload left.
//
// It also orders the jobs' requests, as fio's verify needs: a write never
// overlaps another request in flight, a read may overlap a write already
// in flight (and then accepts either generation), but no write starts
// over a read in flight, so what a read may find is fixed when it starts.
type Shadow struct {
	mu      sync.Mutex
	changed sync.Cond
	gen     uint32
	chunks  map[int64]*chunk
}

const chunkSectors = 2048

type chunk struct {
	committed [chunkSectors]uint32
	pending   [chunkSectors]uint32
	readers   [chunkSectors]uint16
}

// NewShadow returns an empty shadow.
func NewShadow() *Shadow {
	s := &Shadow{chunks: map[int64]*chunk{}}
	s.changed.L = &s.mu
	return s
}

// at finds sector sec's chunk and index, making the chunk if need be.
func (s *Shadow) at(sec int64) (*chunk, int) {
	c := s.chunks[sec/chunkSectors]
	if c == nil {
		c = &chunk{}
		s.chunks[sec/chunkSectors] = c
	}
	return c, int(sec % chunkSectors)
}

// tryWrite claims sectors [sec, sec+n) for a write and returns its
// generation; 0 if a request in flight overlaps them.
func (s *Shadow) tryWriteLocked(sec, n int64) uint32 {
	for i := sec; i < sec+n; i++ {
		c, k := s.at(i)
		if c.readers[k] > 0 || c.pending[k] != 0 {
			return 0
		}
	}
	s.gen++
	if s.gen == 0 {
		s.gen = 1
	}
	for i := sec; i < sec+n; i++ {
		c, k := s.at(i)
		c.pending[k] = s.gen
	}
	return s.gen
}

// TryWrite is tryWriteLocked for one attempt.
func (s *Shadow) TryWrite(sec, n int64) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tryWriteLocked(sec, n)
}

// Write waits until [sec, sec+n) is free, claims it, and returns the
// write's generation; done, if closed, ends the wait with 0.
func (s *Shadow) Write(sec, n int64, done <-chan struct{}) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if g := s.tryWriteLocked(sec, n); g != 0 {
			return g
		}
		select {
		case <-done:
			return 0
		default:
		}
		s.changed.Wait()
	}
}

// EndWrite records the write's outcome: on success the sectors hold its
// generation; on failure nothing is known of them any more.
func (s *Shadow) EndWrite(sec, n int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := sec; i < sec+n; i++ {
		c, k := s.at(i)
		if ok {
			c.committed[k] = c.pending[k]
		} else {
			c.committed[k] = 0
		}
		c.pending[k] = 0
	}
	s.changed.Broadcast()
}

// Read starts a read of [sec, sec+n): it fills expect with, per sector,
// the committed generation and that of a write in flight.
func (s *Shadow) Read(sec, n int64, expect [][2]uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := sec; i < sec+n; i++ {
		c, k := s.at(i)
		c.readers[k]++
		expect[i-sec] = [2]uint32{c.committed[k], c.pending[k]}
	}
}

// EndRead ends a read started with Read.
func (s *Shadow) EndRead(sec, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := sec; i < sec+n; i++ {
		c, k := s.at(i)
		c.readers[k]--
	}
	s.changed.Broadcast()
}

// Wake releases writers waiting in Write so that they see their done
// channel.
func (s *Shadow) Wake() {
	s.mu.Lock()
	s.changed.Broadcast()
	s.mu.Unlock()
}
