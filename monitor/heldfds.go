package monitor

import (
	"sync"

	"golang.org/x/sys/unix"
)

// heldFds is the batch of fds one sendmsg brought. As in QEMU, received
// fds belong to the connection, not to the bytes they came with: qemu.qmp
// sends an fd with a lone space and the command that takes it in a later
// write, libvirt sends it with the command itself. A command takes the
// first fd of the batch the connection held when the command was read;
// taking it closes the rest of the batch (one fd per command). A newer
// batch replaces an untaken one, and the connection's last batch is
// closed when it goes away, so a connection holds at most one batch
// (maxFdsPerRead fds) plus those of requests queued in-band.
//
// Where QEMU closes a replaced batch at once, a batch here is closed when
// neither the connection nor any in-band request still queued refers to
// it: a client with oob enabled may send add-fd with fd A and add-fd with
// fd B back to back, and each command still gets its own fd (QEMU 7.2
// gives B to the first and nothing to the second).
type heldFds struct {
	mu   sync.Mutex
	fds  []int
	refs int
}

// newHeldFds returns a batch with one reference, the connection's.
func newHeldFds(fds []int) *heldFds { return &heldFds{fds: fds, refs: 1} }

// acquire adds a reference for a request; nil (no batch) stays nil.
func (h *heldFds) acquire() *heldFds {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	h.refs++
	h.mu.Unlock()
	return h
}

// release drops a reference; the last one closes any fd left.
func (h *heldFds) release() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refs--; h.refs == 0 {
		closeFds(h.fds)
		h.fds = nil
	}
}

// take returns the batch's first fd and closes the others, or -1 when the
// batch is empty (or nil).
func (h *heldFds) take() int {
	if h == nil {
		return -1
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.fds) == 0 {
		return -1
	}
	fd := h.fds[0]
	closeFds(h.fds[1:])
	h.fds = nil
	return fd
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
