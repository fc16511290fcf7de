// Package aio runs block requests asynchronously, the way a device queue
// drives them: the device submits requests tagged with a value of its
// own, an engine runs them, and completions come back on a channel the
// device reads (cloud-hypervisor's AsyncIo shape). The device never
// learns the image format: requests go to a [Target], a *block.Node.
//
// One engine exists: [Pool], goroutines that run each request
// synchronously on the node (the file driver's preadv/pwritev), which is
// what QEMU's aio=threads is. aio=native and aio=io_uring are refused
// when a node is opened, so no node asks for an engine that is not here.
package aio

import (
	"errors"
	"sync"

	"minivmm/block"
)

// Op is what a request does.
type Op uint8

const (
	Read Op = iota
	Write
	Flush
)

// Request is one request: Bufs (for reads and writes) at Off, Flags for
// writes, and Tag, which its completion carries back.
type Request struct {
	Op    Op
	Bufs  [][]byte
	Off   int64
	Flags block.WriteFlags
	Tag   uint64
}

// Completion reports a request's end: bytes transferred, or the error.
type Completion struct {
	Tag uint64
	N   int
	Err error
}

// Target is what requests run on; *block.Node is one.
type Target interface {
	ReadV(bufs [][]byte, off int64) (int, error)
	WriteV(bufs [][]byte, off int64, flags block.WriteFlags) (int, error)
	Flush() error
}

// Engine runs requests and sends a Completion for each.
type Engine interface {
	// Submit queues r; it waits while the engine's queue is full, and
	// fails after Close.
	Submit(r Request) error
	// Close waits for every request submitted to complete (their
	// completions sent), then stops the engine.
	Close() error
}

// ErrClosed refuses a request submitted after Close.
var ErrClosed = errors.New("aio: engine closed")

// Pool is the goroutine-pool engine (aio=threads): workers take requests
// from a queue as deep as the pool is wide.
type Pool struct {
	target Target
	done   chan<- Completion
	queue  chan Request
	wg     sync.WaitGroup

	mu     sync.RWMutex // Submit (shared) against Close (exclusive)
	closed bool
}

// NewPool starts workers goroutines running requests on t; each
// completion is sent on done, which the caller must keep reading.
func NewPool(t Target, workers int, done chan<- Completion) *Pool {
	workers = max(workers, 1)
	p := &Pool{target: t, done: done, queue: make(chan Request, workers)}
	p.wg.Add(workers)
	for range workers {
		go p.work()
	}
	return p
}

func (p *Pool) work() {
	defer p.wg.Done()
	for r := range p.queue {
		p.done <- run(p.target, r)
	}
}

func run(t Target, r Request) Completion {
	c := Completion{Tag: r.Tag}
	switch r.Op {
	case Read:
		c.N, c.Err = t.ReadV(r.Bufs, r.Off)
	case Write:
		c.N, c.Err = t.WriteV(r.Bufs, r.Off, r.Flags)
	case Flush:
		c.Err = t.Flush()
	default:
		c.Err = errors.ErrUnsupported
	}
	return c
}

// Submit queues r for a worker.
func (p *Pool) Submit(r Request) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	p.queue <- r
	return nil
}

// Close waits for the queued requests to complete and stops the workers.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.queue)
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}
