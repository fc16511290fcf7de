package file

import (
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The io_uring ABI (linux/io_uring.h), as much of it as this engine uses.
const (
	uringOpNop    = 0
	uringOpReadv  = 1
	uringOpWritev = 2
	uringOpFsync  = 3

	uringFsyncDatasync  = 1
	uringEnterGetevents = 1

	uringOffSQRing = 0
	uringOffCQRing = 0x8000000
	uringOffSQEs   = 0x10000000
)

type uringSQOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

type uringCQOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

type uringParams struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  uringSQOffsets
	CQOff                                                                  uringCQOffsets
}

type uringSQE struct {
	Opcode      uint8
	Flags       uint8
	IOPrio      uint16
	Fd          int32
	Off         uint64
	Addr        uint64
	Len         uint32
	OpFlags     uint32 // rw_flags, fsync_flags
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	SpliceFdIn  int32
	Addr3       uint64
	_           uint64
}

type uringCQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// uringSys are the two system calls the engine makes; tests inject
// failures through them.
type uringSys struct {
	setup func(entries uint32, p *uringParams) (int, error)
	enter func(fd int, toSubmit, minComplete, flags uint32) (int, error)
}

func realUringSetup(entries uint32, p *uringParams) (int, error) {
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

func realUringEnter(fd int, toSubmit, minComplete, flags uint32) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit), uintptr(minComplete), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// uring is an io_uring instance: its fd, the three shared mappings and
// the pointers into them.
type uring struct {
	sys    uringSys
	fd     int
	sqMap  []byte
	cqMap  []byte
	sqeMap []byte
	sqes   []uringSQE

	sqHead, sqTail, sqMask *uint32
	cqHead, cqTail, cqMask *uint32
	cqes                   []uringCQE

	slots *slots

	mu         sync.Mutex // the SQ tail, and who submits
	tail       uint32     // our copy of the SQ tail
	submitting bool

	completer // the CQ belongs to whoever holds its mu
}

func newUring(sys uringSys) (*uring, error) {
	if sys.setup == nil {
		sys.setup = realUringSetup
	}
	if sys.enter == nil {
		sys.enter = realUringEnter
	}
	var p uringParams
	fd, err := sys.setup(engineDepth, &p)
	if err != nil {
		return nil, setupError("io_uring", err)
	}
	u := &uring{sys: sys, fd: fd, completer: newCompleter()}
	if err := u.mapRings(&p); err != nil {
		u.unmap()
		unix.Close(fd)
		return nil, setupError("io_uring", err)
	}
	u.slots = newSlots(int(p.SQEntries))
	return u, nil
}

func (u *uring) mapRings(p *uringParams) error {
	var err error
	sqSize := int(p.SQOff.Array) + int(p.SQEntries)*4
	if u.sqMap, err = unix.Mmap(u.fd, uringOffSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return err
	}
	cqSize := int(p.CQOff.CQEs) + int(p.CQEntries)*int(unsafe.Sizeof(uringCQE{}))
	if u.cqMap, err = unix.Mmap(u.fd, uringOffCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return err
	}
	if u.sqeMap, err = unix.Mmap(u.fd, uringOffSQEs, int(p.SQEntries)*int(unsafe.Sizeof(uringSQE{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return err
	}
	u.sqes = unsafe.Slice((*uringSQE)(unsafe.Pointer(&u.sqeMap[0])), p.SQEntries)
	u32 := func(m []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&m[off])) }
	u.sqHead, u.sqTail, u.sqMask = u32(u.sqMap, p.SQOff.Head), u32(u.sqMap, p.SQOff.Tail), u32(u.sqMap, p.SQOff.RingMask)
	u.cqHead, u.cqTail, u.cqMask = u32(u.cqMap, p.CQOff.Head), u32(u.cqMap, p.CQOff.Tail), u32(u.cqMap, p.CQOff.RingMask)
	u.cqes = unsafe.Slice((*uringCQE)(unsafe.Pointer(&u.cqMap[p.CQOff.CQEs])), p.CQEntries)
	// The SQ array maps ring positions to SQEs one to one, once.
	array := unsafe.Slice((*uint32)(unsafe.Pointer(&u.sqMap[p.SQOff.Array])), p.SQEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	u.tail = atomic.LoadUint32(u.sqTail)
	return nil
}

func (u *uring) unmap() {
	u.sqes, u.cqes = nil, nil
	for _, m := range []*[]byte{&u.sqMap, &u.cqMap, &u.sqeMap} {
		if *m != nil {
			unix.Munmap(*m)
			*m = nil
		}
	}
}

func (u *uring) readv(fd int, bufs [][]byte, off int64) error {
	return u.do(u.slots.request(opRead, fd, bufs, off, false))
}

func (u *uring) writev(fd int, bufs [][]byte, off int64, dsync bool) error {
	return u.do(u.slots.request(opWrite, fd, bufs, off, dsync))
}

func (u *uring) fdatasync(fd int) error {
	return u.do(u.slots.request(opSync, fd, nil, 0, false))
}

// do runs r and gives it back to the pool.
func (u *uring) do(r *request) error {
	defer u.slots.release(r)
	i, err := u.slots.get(r)
	if err != nil {
		return err
	}
	// A caller that finds no one waiting for completions waits itself;
	// alone with its request, it submits and waits in one system call
	// (with others in flight, waiting there would hold back the
	// submission of what they queue meanwhile).
	polling := u.completer.mu.TryLock()
	u.mu.Lock()
	u.put(i, r)
	u.submitLocked(polling && u.slots.count.Load() == 1)
	return u.wait(r, polling, u.slots, u.reap)
}

// put writes r's SQE at the ring's tail (u.mu held).
func (u *uring) put(i uint32, r *request) {
	sqe := &u.sqes[u.tail&*u.sqMask]
	*sqe = uringSQE{Fd: int32(r.fd), Off: uint64(r.off), UserData: uint64(i)}
	switch r.op {
	case opRead:
		sqe.Opcode, sqe.Addr, sqe.Len = uringOpReadv, r.iovAddr(), uint32(len(r.iov))
	case opWrite:
		sqe.Opcode, sqe.Addr, sqe.Len = uringOpWritev, r.iovAddr(), uint32(len(r.iov))
		if r.dsync {
			sqe.OpFlags = unix.RWF_DSYNC
		}
	case opSync:
		sqe.Opcode, sqe.OpFlags = uringOpFsync, uringFsyncDatasync
	}
	u.tail++
	atomic.StoreUint32(u.sqTail, u.tail)
}

// submitLocked enters the kernel for what the SQ holds, unless another
// caller is already doing so (it will take ours too); it unlocks u.mu.
// With wait (the caller holds the CQ), the first entry also waits for a
// completion.
func (u *uring) submitLocked(wait bool) {
	if u.submitting {
		u.mu.Unlock()
		return
	}
	u.submitting = true
	for {
		n := u.tail - atomic.LoadUint32(u.sqHead)
		if n == 0 {
			break
		}
		u.mu.Unlock()
		var err error
		if wait {
			_, err = u.sys.enter(u.fd, n, 1, uringEnterGetevents)
			wait = false
		} else {
			_, err = u.sys.enter(u.fd, n, 0, 0)
		}
		u.mu.Lock()
		if err == unix.EINTR || err == unix.EAGAIN || err == unix.EBUSY {
			continue
		}
		if err != nil {
			u.failQueuedLocked(err)
		}
	}
	u.submitting = false
	u.mu.Unlock()
}

// failQueuedLocked fails the requests whose SQEs the kernel refused to
// take, and takes them off the ring (only this submitter moves the tail
// forward while it holds u.mu).
func (u *uring) failQueuedLocked(err error) {
	head := atomic.LoadUint32(u.sqHead)
	for t := head; t != u.tail; t++ {
		u.slots.finish(uint32(u.sqes[t&*u.sqMask].UserData), err)
	}
	u.tail = head
	atomic.StoreUint32(u.sqTail, u.tail)
}

// reap finishes the requests the CQ holds; with wait, it first waits
// for one if there is none (the caller holds the CQ: u.completer.mu).
func (u *uring) reap(wait bool) {
	head, tail := atomic.LoadUint32(u.cqHead), atomic.LoadUint32(u.cqTail)
	if head == tail {
		if !wait {
			return
		}
		if _, err := u.sys.enter(u.fd, 0, 1, uringEnterGetevents); err != nil && err != unix.EINTR {
			// Not expected on a ring this engine owns; the completions
			// are still coming: wait again, without spinning.
			time.Sleep(time.Millisecond)
		}
		tail = atomic.LoadUint32(u.cqTail)
	}
	for ; head != tail; head++ {
		cqe := u.cqes[head&*u.cqMask]
		u.complete(uint32(cqe.UserData), int64(cqe.Res))
	}
	atomic.StoreUint32(u.cqHead, head)
}

func (u *uring) complete(i uint32, res int64) { u.slots.complete(i, res, &u.mu, u) }

// resubmit puts the rest of r back on the submission queue.
func (u *uring) resubmit(i uint32, r *request) {
	u.mu.Lock()
	u.put(i, r)
	u.submitLocked(false)
}

// close waits for the requests in flight (their callers reap them), then
// unmaps the rings and closes the ring's fd.
func (u *uring) close() error {
	u.slots.drain()
	u.unmap()
	return unix.Close(u.fd)
}
