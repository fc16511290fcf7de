package vhostuser

import (
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// vring is one virtqueue's vhost-user state. Its fds are the connection's:
// kick is read by a goroutine while the queue runs, call is written by
// Notify from the device's goroutines, err is only kept.
type vring struct {
	index   int
	num     uint32
	base    uint16
	addr    *VringAddr
	enabled bool

	kick     *os.File
	kickDone chan struct{} // closed when the kick reader has returned

	callMu sync.Mutex
	call   int // -1: none

	errFd int // -1: none

	q Queue // running, or nil
}

func newVring(i int) *vring { return &vring{index: i, call: -1, errFd: -1} }

// notify signals the call eventfd, if any.
func (v *vring) notify() {
	v.callMu.Lock()
	defer v.callMu.Unlock()
	if v.call >= 0 {
		signal(v.call)
	}
}

// fail signals the error eventfd, if any.
func (v *vring) fail() {
	v.callMu.Lock()
	defer v.callMu.Unlock()
	if v.errFd >= 0 {
		signal(v.errFd)
	}
}

func (v *vring) setCall(fd int) {
	v.callMu.Lock()
	old := v.call
	v.call = fd
	v.callMu.Unlock()
	if old >= 0 {
		unix.Close(old)
	}
}

func (v *vring) setErr(fd int) {
	v.callMu.Lock()
	old := v.errFd
	v.errFd = fd
	v.callMu.Unlock()
	if old >= 0 {
		unix.Close(old)
	}
}

// setKick takes fd as the kick eventfd, replacing (and closing) the
// previous one; the caller has stopped the queue.
func (v *vring) setKick(fd int) error {
	v.dropKick()
	if fd < 0 {
		return nil
	}
	// Non-blocking, so that the runtime's poller waits on it and Close
	// wakes the reader.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return err
	}
	v.kick = os.NewFile(uintptr(fd), "vhost-user kick")
	return nil
}

func (v *vring) dropKick() {
	v.stop()
	if v.kick != nil {
		v.kick.Close()
		v.kick = nil
	}
}

// readKicks forwards each kick to q until the kick file's read deadline
// passes or it is closed.
func readKicks(f *os.File, q Queue, done chan struct{}) {
	defer close(done)
	var b [8]byte
	for {
		// Any error ends the reader: a deadline or close is how it is
		// stopped, and an eventfd fails reads for no other reason.
		if _, err := f.Read(b[:]); err != nil {
			return
		}
		q.Kick()
	}
}

// selfKick kicks the queue through its kick eventfd, as the front end
// would: the kick reader serves it, and a stopped reader does not.
func (v *vring) selfKick() {
	var one [8]byte
	one[0] = 1
	v.kick.Write(one[:])
}

// stop stops the queue if it runs and keeps its next available index and
// its kick fd. The session stops the device first (session.halt).
func (v *vring) stop() {
	if v.kickDone != nil {
		// Stop the reader first so that no kick reaches a stopped queue.
		v.kick.SetReadDeadline(time.Unix(1, 0))
		<-v.kickDone
		v.kickDone = nil
		v.kick.SetReadDeadline(time.Time{})
	}
	if v.q != nil {
		v.base = v.q.Stop()
		v.q = nil
	}
}

// release stops the queue and closes every fd.
func (v *vring) release() {
	v.stop()
	v.dropKick()
	v.setCall(-1)
	v.setErr(-1)
}
