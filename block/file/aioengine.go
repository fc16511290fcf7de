package file

import (
	"errors"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// engine is a kernel submission interface (aio=native, aio=io_uring) the
// node's aligned reads, writes and flushes go through; aio=threads has
// none, and runs them as system calls on the caller's goroutine (the
// goroutine pool of package block/aio above is minivmm's thread pool).
// Callers submit and wait; the waiting is shared (see completer).
type engine interface {
	readv(fd int, bufs [][]byte, off int64) error
	writev(fd int, bufs [][]byte, off int64, dsync bool) error
	fdatasync(fd int) error
	// close waits for the requests in flight and frees the kernel's
	// context.
	close() error
}

// engineDepth is how many requests one engine has in flight: QEMU's
// io_uring ring size. Callers past it wait for a free slot.
const engineDepth = 128

const (
	opRead = iota
	opWrite
	opSync
)

// request is one caller's operation while the kernel has it: the engine
// keeps it in its slot table, so its buffers and iovecs stay reachable
// (Go's heap does not move) until the completion is taken.
type request struct {
	op    int
	fd    int
	bufs  [][]byte // what is left to transfer
	iov   []unix.Iovec
	off   int64
	dsync bool
	done  chan error
	cb    iocb // Linux AIO's control block (the kernel copies it at io_submit)
}

func newRequest(op, fd int, bufs [][]byte, off int64, dsync bool) *request {
	r := &request{done: make(chan error, 1)}
	r.reset(op, fd, bufs, off, dsync)
	return r
}

// reset makes r the request for bufs at off, keeping its lists' arrays.
func (r *request) reset(op, fd int, bufs [][]byte, off int64, dsync bool) {
	r.op, r.fd, r.off, r.dsync = op, fd, off, dsync
	r.bufs, r.iov = r.bufs[:0], r.iov[:0]
	if op == opSync {
		return
	}
	for _, b := range bufs {
		if len(b) > 0 {
			r.bufs = append(r.bufs, b)
		}
	}
	r.fillIov()
}

func (r *request) fillIov() {
	r.iov = r.iov[:0]
	for _, b := range r.bufs {
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		r.iov = append(r.iov, v)
	}
}

func (r *request) remaining() int { return vlen(r.bufs) }

// partial says whether res leaves r to submit again with new fields: the
// engine then orders the last submitter's reads of r before result's
// writes (the kernel's own ordering is invisible to the race detector).
func (r *request) partial(res int64) bool { return res > 0 && int(res) < r.remaining() }

// iovAddr is the address of the iovec array the kernel reads (nil: none).
func (r *request) iovAddr() uint64 {
	if len(r.iov) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&r.iov[0])))
}

// result takes the kernel's answer for one submission of r (a byte count
// or a negated errno) as QEMU's completion handlers do: EINTR and EAGAIN
// submit again, a short transfer submits the rest (QEMU's io_uring does
// so for reads; for writes a threads-mode pwritev would go on too), a
// read that reaches the end of the file fills the rest with zeroes, and
// a write that makes no progress is ENOSPC. It says whether r is done.
func (r *request) result(res int64) (done bool, err error) {
	switch {
	case res == -int64(unix.EINTR) || res == -int64(unix.EAGAIN):
		return false, nil
	case res < 0:
		return true, unix.Errno(-res)
	case r.op == opSync:
		return true, nil
	case res == 0 && r.op == opRead:
		for _, b := range r.bufs {
			clear(b)
		}
		return true, nil
	case res == 0:
		return true, unix.ENOSPC
	}
	n := int(res)
	if n >= r.remaining() { // all of it, as nearly always
		return true, nil
	}
	r.bufs = advance(r.bufs, n)
	r.off += int64(n)
	if r.op == opRead {
		// At the end of the file (an O_DIRECT read stops there, where
		// asking again at an unaligned offset would fail): the rest
		// reads as zeroes, as with QEMU's Linux AIO.
		if size, err := unix.Seek(r.fd, 0, unix.SEEK_END); err == nil && r.off >= size {
			for _, b := range r.bufs {
				clear(b)
			}
			return true, nil
		}
	}
	r.fillIov()
	return false, nil
}

// slots is an engine's table of requests in flight, indexed by the tag the
// kernel carries back (user_data, aio_data): a number, never a Go pointer
// hidden in an integer.
type slots struct {
	free     chan uint32
	mu       sync.Mutex
	reqs     []*request
	inflight sync.WaitGroup
	count    atomic.Int32 // requests in flight
	closed   bool
	pool     sync.Pool // of *request: a request allocates nothing once warm
}

// request returns a request for the arguments, reused where one is free.
func (s *slots) request(op, fd int, bufs [][]byte, off int64, dsync bool) *request {
	r, _ := s.pool.Get().(*request)
	if r == nil {
		return newRequest(op, fd, bufs, off, dsync)
	}
	r.reset(op, fd, bufs, off, dsync)
	return r
}

// release takes back a request its caller has the result of, holding on
// to none of the caller's buffers.
func (s *slots) release(r *request) {
	clear(r.bufs[:cap(r.bufs)])
	clear(r.iov[:cap(r.iov)])
	s.pool.Put(r)
}

func (s *slots) busy() bool { return s.count.Load() > 0 }

func newSlots(n int) *slots {
	s := &slots{free: make(chan uint32, n), reqs: make([]*request, n)}
	for i := range n {
		s.free <- uint32(i)
	}
	return s
}

var errEngineClosed = errors.New("I/O engine closed")

// get waits for a free slot and puts r in it.
func (s *slots) get(r *request) (uint32, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, errEngineClosed
	}
	s.inflight.Add(1)
	s.count.Add(1)
	s.mu.Unlock()
	i := <-s.free
	s.mu.Lock()
	s.reqs[i] = r
	s.mu.Unlock()
	return i, nil
}

func (s *slots) at(i uint32) *request {
	s.mu.Lock()
	defer s.mu.Unlock()
	if int(i) >= len(s.reqs) {
		return nil
	}
	return s.reqs[i]
}

// finish hands r's result to its caller and frees its slot.
// resubmitter sends the rest of a request the kernel did part of.
type resubmitter interface {
	resubmit(i uint32, r *request)
}

// complete takes the kernel's answer res for the request in slot i: done,
// its caller gets the result; else the engine submits the rest. mu is the
// engine's submission lock, taken once around a partial answer so that
// the last submitter's reads of r come before result's writes.
func (s *slots) complete(i uint32, res int64, mu *sync.Mutex, e resubmitter) {
	r := s.at(i)
	if r == nil {
		return
	}
	if r.partial(res) {
		mu.Lock()
		mu.Unlock()
	}
	done, err := r.result(res)
	if done {
		s.finish(i, err)
		return
	}
	e.resubmit(i, r)
}

func (s *slots) finish(i uint32, err error) {
	s.mu.Lock()
	r := s.reqs[i]
	s.reqs[i] = nil
	s.mu.Unlock()
	s.free <- i
	s.count.Add(-1)
	r.done <- err
	s.inflight.Done()
}

// drain refuses new requests and waits for those in flight.
func (s *slots) drain() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.inflight.Wait()
}

// completer is how an engine's callers wait without a goroutine of its
// own: whichever caller holds mu waits in the kernel for completions and
// finishes them for everyone (a caller alone with its request gets its
// completion straight from its own system call, as a pread returns); a
// poller leaving while requests are still in flight hands the job to one
// of their callers.
type completer struct {
	mu      sync.Mutex
	handoff chan struct{}
}

func newCompleter() completer { return completer{handoff: make(chan struct{}, 1)} }

// wait returns r's result. polling says the caller holds c.mu already;
// reap takes the completions the kernel has, with wait at least one.
func (c *completer) wait(r *request, polling bool, s *slots, reap func(wait bool)) error {
	for {
		if !polling {
			select {
			case err := <-r.done:
				return err
			case <-c.handoff:
			}
			if !c.mu.TryLock() {
				continue // another caller polls: it hands over when it leaves
			}
		}
		polling = true
		for wait := false; ; wait = true {
			reap(wait)
			select {
			case err := <-r.done:
				c.mu.Unlock()
				if s.busy() {
					select {
					case c.handoff <- struct{}{}:
					default: // a token is there already
					}
				}
				return err
			default:
			}
		}
	}
}
