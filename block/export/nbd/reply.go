package nbd

import (
	"net"
	"sync"
)

// replyWriter puts replies on the wire for a connection's workers. A
// small reply is copied into a pending batch, and the worker that finds
// no write in progress writes the batch, and whatever is added while it
// writes, until nothing is pending: under load one write carries many
// replies, and no worker waits for another's syscall. A large reply is
// written from the caller's buffers (no copy), after the batch, by the
// caller, which may then reuse them.
type replyWriter struct {
	nc   net.Conn
	fail func() // the connection's shutdown, on a failed write

	mu      sync.Mutex
	idle    *sync.Cond // writing went false
	pending []byte
	spare   []byte
	writing bool
	broken  bool // a write failed: replies are dropped
	// hold tells a reply to wait in the batch: the connection's
	// reader will flush it.
	hold func() bool
}

// batchCopyMax is the largest reply copied into the batch; larger ones
// cost more to copy than a syscall of their own.
const batchCopyMax = 64 << 10

// batchKeepMax bounds the batch buffer a connection keeps between
// bursts.
const batchKeepMax = 1 << 20

func newReplyWriter(nc net.Conn, fail func()) *replyWriter {
	w := &replyWriter{nc: nc, fail: fail}
	w.idle = sync.NewCond(&w.mu)
	return w
}

// send writes one reply, whole and contiguous on the wire; bufs may be
// reused once send returns.
func (w *replyWriter) send(bufs ...[]byte) {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	w.mu.Lock()
	if w.broken {
		w.mu.Unlock()
		return
	}
	if n <= batchCopyMax {
		for _, b := range bufs {
			w.pending = append(w.pending, b...)
		}
		if w.writing || w.hold != nil && w.hold() {
			w.mu.Unlock()
			return
		}
		bufs = nil
	} else {
		for w.writing {
			w.idle.Wait()
		}
	}
	w.writing = true
	w.flush(bufs)
}

// flush writes the batch, then extra, then what was added meanwhile; mu
// is held and writing set on entry, mu released on return.
func (w *replyWriter) flush(extra [][]byte) {
	for {
		out := w.pending
		w.pending = w.spare[:0]
		w.spare = nil
		w.mu.Unlock()
		var err error
		if len(extra) > 0 {
			nb := make(net.Buffers, 0, len(extra)+1)
			if len(out) > 0 {
				nb = append(nb, out)
			}
			nb = append(nb, extra...)
			_, err = nb.WriteTo(w.nc)
			extra = nil
		} else {
			_, err = w.nc.Write(out)
		}
		if err != nil {
			w.fail() // the reader sees it and ends the connection
		}
		w.mu.Lock()
		if cap(out) <= batchKeepMax {
			w.spare = out[:0]
		}
		if err != nil {
			w.broken = true
			w.pending = w.pending[:0]
		}
		if len(w.pending) == 0 {
			w.writing = false
			w.idle.Broadcast()
			w.mu.Unlock()
			return
		}
	}
}

// flushPending writes the batch unless a write is under way (which
// writes it).
func (w *replyWriter) flushPending() {
	w.mu.Lock()
	if w.writing || len(w.pending) == 0 {
		w.mu.Unlock()
		return
	}
	w.writing = true
	w.flush(nil)
}
