package file

import (
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The Linux AIO ABI (linux/aio_abi.h), little-endian layout.
const (
	iocbCmdPread   = 0
	iocbCmdFdsync  = 3
	iocbCmdPreadv  = 7
	iocbCmdPwritev = 8
)

type iocb struct {
	Data     uint64
	Key      uint32
	RWFlags  uint32
	Opcode   uint16
	ReqPrio  int16
	Fd       uint32
	Buf      uint64
	NBytes   uint64
	Offset   int64
	Reserved uint64
	Flags    uint32
	ResFd    uint32
}

type ioEvent struct {
	Data uint64
	Obj  uint64
	Res  int64
	Res2 int64
}

// laioSys are the system calls the engine makes; tests inject failures
// through them.
type laioSys struct {
	setup  func(n int, ctx *uint64) error
	submit func(ctx uint64, cbs []*iocb) (int, error)
}

func realIOSetup(n int, ctx *uint64) error {
	_, _, e := unix.Syscall(unix.SYS_IO_SETUP, uintptr(n), uintptr(unsafe.Pointer(ctx)), 0)
	if e != 0 {
		return e
	}
	return nil
}

func realIOSubmit(ctx uint64, cbs []*iocb) (int, error) {
	n, _, e := unix.Syscall(unix.SYS_IO_SUBMIT, uintptr(ctx), uintptr(len(cbs)), uintptr(unsafe.Pointer(&cbs[0])))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func ioGetevents(ctx uint64, min, max int, ev []ioEvent) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_IO_GETEVENTS, uintptr(ctx), uintptr(min), uintptr(max), uintptr(unsafe.Pointer(&ev[0])), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// laio is a Linux AIO context (aio=native).
type laio struct {
	sys      laioSys
	ctx      uint64
	slots    *slots
	maxBatch int // aio-max-batch: most iocbs per io_submit (0: no limit)

	mu         sync.Mutex
	queued     []*iocb // waiting for io_submit, in order
	batch      []*iocb // what the submitter passes to io_submit
	submitting bool

	// noFdsync: the kernel refused IOCB_CMD_FDSYNC on this node's file
	// (EINVAL, as it does where the file system has no AIO fsync);
	// flushes then run as fdatasync on the caller's goroutine, as
	// QEMU's go to its thread pool.
	noFdsync atomic.Bool

	completer           // the context's events belong to whoever holds its mu
	events    []ioEvent // io_getevents' buffer, the poller's
}

func newLaio(sys laioSys, maxBatch int) (*laio, error) {
	if sys.setup == nil {
		sys.setup = realIOSetup
	}
	if sys.submit == nil {
		sys.submit = realIOSubmit
	}
	l := &laio{sys: sys, maxBatch: maxBatch, completer: newCompleter(), events: make([]ioEvent, engineDepth)}
	if err := sys.setup(engineDepth, &l.ctx); err != nil {
		return nil, setupError("native", err)
	}
	l.slots = newSlots(engineDepth)
	return l, nil
}

func (l *laio) readv(fd int, bufs [][]byte, off int64) error {
	return l.do(l.slots.request(opRead, fd, bufs, off, false))
}

func (l *laio) writev(fd int, bufs [][]byte, off int64, dsync bool) error {
	return l.do(l.slots.request(opWrite, fd, bufs, off, dsync))
}

func (l *laio) fdatasync(fd int) error {
	if !l.noFdsync.Load() {
		err := l.do(l.slots.request(opSync, fd, nil, 0, false))
		if err != unix.EINVAL {
			return err
		}
		l.noFdsync.Store(true)
	}
	for {
		if err := unix.Fdatasync(fd); err != unix.EINTR {
			return err
		}
	}
}

// do runs r and gives it back to the pool.
func (l *laio) do(r *request) error {
	defer l.slots.release(r)
	i, err := l.slots.get(r)
	if err != nil {
		return err
	}
	polling := l.completer.mu.TryLock()
	l.queue(l.iocbFor(i, r))
	return l.wait(r, polling, l.slots, l.reap)
}

func (l *laio) iocbFor(i uint32, r *request) *iocb {
	cb := &r.cb
	*cb = iocb{Data: uint64(i), Fd: uint32(r.fd), Offset: r.off}
	switch r.op {
	case opRead:
		cb.Opcode, cb.Buf, cb.NBytes = iocbCmdPreadv, r.iovAddr(), uint64(len(r.iov))
	case opWrite:
		cb.Opcode, cb.Buf, cb.NBytes = iocbCmdPwritev, r.iovAddr(), uint64(len(r.iov))
		if r.dsync {
			cb.RWFlags = unix.RWF_DSYNC
		}
	case opSync:
		cb.Opcode = iocbCmdFdsync
	}
	return cb
}

// queue adds cb to what the next io_submit takes: one caller at a time
// submits, everything queued meanwhile in one call.
func (l *laio) queue(cb *iocb) {
	l.mu.Lock()
	l.queued = append(l.queued, cb)
	if l.submitting {
		l.mu.Unlock()
		return
	}
	l.submitting = true
	for len(l.queued) > 0 {
		k := len(l.queued)
		if l.maxBatch > 0 && k > l.maxBatch {
			k = l.maxBatch
		}
		// The batch is the submitter's own list (one submitter at a
		// time): both lists keep their arrays from call to call.
		l.batch = append(l.batch[:0], l.queued[:k]...)
		n := copy(l.queued, l.queued[k:])
		clear(l.queued[n:])
		l.queued = l.queued[:n]
		l.mu.Unlock()
		rest := l.submit(l.batch)
		l.mu.Lock()
		if len(rest) > 0 {
			l.queued = append(append([]*iocb(nil), rest...), l.queued...)
			// The kernel is out of room (EAGAIN): let completions
			// come in before trying again.
			l.mu.Unlock()
			time.Sleep(50 * time.Microsecond)
			l.mu.Lock()
		}
		clear(l.batch)
	}
	l.submitting = false
	l.mu.Unlock()
}

// submit passes batch to io_submit until it is all taken, and returns
// what the kernel had no room for. As QEMU's ioq_submit, a refused iocb
// (an error for the first of the batch) fails that request alone, and
// the rest is submitted again.
func (l *laio) submit(batch []*iocb) []*iocb {
	for len(batch) > 0 {
		n, err := l.sys.submit(l.ctx, batch)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return batch
		case err != nil:
			l.refused(batch[0], err)
			n = 1
		}
		batch = batch[n:]
	}
	return nil
}

func (l *laio) refused(cb *iocb, err error) {
	l.slots.finish(uint32(cb.Data), err)
}

// reap finishes the requests whose events the kernel has; with wait, it
// waits for one (the caller holds the events: l.completer.mu).
func (l *laio) reap(wait bool) {
	min := 0
	if wait {
		min = 1
	}
	n, err := ioGetevents(l.ctx, min, len(l.events), l.events)
	if err != nil {
		if err != unix.EINTR {
			time.Sleep(time.Millisecond) // not expected: wait again without spinning
		}
		return
	}
	for _, e := range l.events[:n] {
		l.complete(uint32(e.Data), e.Res)
	}
}

func (l *laio) complete(i uint32, res int64) { l.slots.complete(i, res, &l.mu, l) }

// resubmit queues the rest of r.
func (l *laio) resubmit(i uint32, r *request) { l.queue(l.iocbFor(i, r)) }

// close waits for the requests in flight (their callers reap them), then
// destroys the context.
func (l *laio) close() error {
	l.slots.drain()
	if _, _, e := unix.Syscall(unix.SYS_IO_DESTROY, uintptr(l.ctx), 0, 0); e != 0 {
		return e
	}
	return nil
}
