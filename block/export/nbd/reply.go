package nbd

import (
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// replyWriter puts replies on the wire for a connection's workers. A
// small reply is copied into a pending batch, and the worker that finds
// no write in progress writes the batch, and whatever is added while it
// writes, until nothing is pending: under load one write carries many
// replies, and no worker waits for another's syscall. A large reply is
// written from the caller's buffers (no copy), after the batch, by the
// caller, which may then reuse them.
//
// The connection's reader never waits to write: a client that sends
// more requests before it reads replies would have it wait on a full
// socket while the client waits on it. Where the reader would write (its
// own inline replies, a held batch), it writes what the socket takes at
// once, and wakes the connection's writer goroutine for the rest.
type replyWriter struct {
	nc   net.Conn
	fail func() // the connection's shutdown, on a failed write

	mu      sync.Mutex
	idle    *sync.Cond // writing went false, or the batch was taken
	pending []byte
	spare   []byte
	writing bool
	broken  bool // a write failed: replies are dropped
	// hold tells a reply to wait in the batch: the connection's
	// reader will flush it.
	hold func() bool
	// handoff tells a reply whose sender would write the batch to wake
	// the writer goroutine instead: the sender is the reader.
	handoff func() bool
	kick    chan struct{} // to the writer goroutine; sent with writing set
	done    sync.WaitGroup
}

// batchCopyMax is the largest reply copied into the batch; larger ones
// cost more to copy than a syscall of their own. Every inline read's
// reply (inlineMax, with its chunk headers) is copied: only workers
// write from their own buffers.
const batchCopyMax = inlineMax + 64

// batchMax is how much the batch holds before senders wait.
const batchMax = 4 << 20

// batchKeepMax bounds the batch buffer a connection keeps between
// bursts.
const batchKeepMax = 1 << 20

// newReplyWriter starts the connection's writer goroutine; stop ends it.
func newReplyWriter(nc net.Conn, fail func(), hold, handoff func() bool) *replyWriter {
	w := &replyWriter{nc: nc, fail: fail, hold: hold, handoff: handoff, kick: make(chan struct{}, 1)}
	w.idle = sync.NewCond(&w.mu)
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		for range w.kick {
			w.mu.Lock()
			w.flush(nil)
		}
	}()
	return w
}

// stop waits for the writer goroutine to have written what it was given
// and ends it; no reply may be sent after.
func (w *replyWriter) stop() {
	close(w.kick)
	w.done.Wait()
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
		// A client that does not read its replies gets no more kept
		// for it than batchMax: the sender waits for the batch to
		// leave (the reader then stops reading requests).
		for len(w.pending) >= batchMax && w.writing && !w.broken {
			w.idle.Wait()
		}
		if w.broken {
			w.mu.Unlock()
			return
		}
		for _, b := range bufs {
			w.pending = append(w.pending, b...)
		}
		if w.writing || w.hold() && len(w.pending) < batchMax {
			w.mu.Unlock()
			return
		}
		if w.handoff() {
			w.writing = true
			w.flushNow()
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
		w.idle.Broadcast() // room in the batch
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

// flushPending writes the batch the way the reader may (flushNow),
// unless a write is under way (which writes it); the reader calls it.
func (w *replyWriter) flushPending() {
	w.mu.Lock()
	if w.writing || len(w.pending) == 0 {
		w.mu.Unlock()
		return
	}
	w.writing = true
	w.flushNow()
}

// flushNow writes the batch as far as the socket takes it without
// waiting, then leaves what is left, and what was added meanwhile, to
// the writer goroutine. mu is held and writing set on entry, mu
// released on return.
func (w *replyWriter) flushNow() {
	out := w.pending
	w.pending = w.spare[:0]
	w.spare = nil
	w.mu.Unlock()
	n := w.tryWrite(out)
	w.mu.Lock()
	if n == len(out) {
		if cap(out) <= batchKeepMax {
			w.spare = out[:0]
		}
		if len(w.pending) == 0 {
			w.writing = false
			w.idle.Broadcast()
			w.mu.Unlock()
			return
		}
	} else {
		// The rest goes first.
		w.pending = append(out[n:len(out):len(out)], w.pending...)
	}
	w.kick <- struct{}{}
	w.mu.Unlock()
}

// tryWrite writes what the socket takes of p now and says how much; on
// a connection that cannot say (not a socket), nothing.
func (w *replyWriter) tryWrite(p []byte) int {
	sc, ok := w.nc.(syscall.Conn)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	var n int
	rc.Write(func(fd uintptr) bool {
		// The socket is non-blocking: EAGAIN when full. Any other
		// error is the writer goroutine's to meet and report.
		n, _ = unix.Write(int(fd), p)
		return true
	})
	return max(n, 0)
}
