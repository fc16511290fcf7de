package monitor

import (
	"strings"
	"time"
)

// outQueueLen bounds what a connection may have waiting to be written:
// replies (at most one per queued in-band request, plus oob ones) and
// events. A client whose queue is full when an event comes has not read
// for a long while; it is dropped rather than waited for.
const outQueueLen = 1024

// outMsg is one encoded message for the writer. done, when not nil, is
// closed once the message has been written (or the connection has died).
type outMsg struct {
	data []byte
	done chan struct{}
}

// writeLoop is the connection's writer: the only goroutine that writes to
// its socket. A write that does not complete within writeTimeout drops the
// client.
func (c *conn) writeLoop() {
	defer close(c.wdone)
	broken := false
	write := func(m outMsg) {
		if !broken {
			c.uc.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := c.uc.Write(m.data); err != nil {
				broken = true
				c.kill()
			}
		}
		if m.done != nil {
			close(m.done)
		}
	}
	for {
		select {
		case m := <-c.out:
			write(m)
		case <-c.dead:
			return
		case <-c.finish:
			// The reader and the in-band worker are done: write what
			// they left, then stop. Events still arriving are not
			// waited for.
			for {
				select {
				case m := <-c.out:
					write(m)
				default:
					return
				}
			}
		}
	}
}

// encodeMsg renders one message as QEMU's monitor writes it: CRLF-terminated.
func (c *conn) encodeMsg(msg Obj) []byte {
	var b strings.Builder
	encode(&b, msg, c.mon.pretty, 0)
	b.WriteString("\r\n")
	return []byte(b.String())
}

// send queues a reply, waiting for room in the queue (only this
// connection's own command goroutine waits). wait: return only once the
// reply has been written, for a command whose after-reply action (quit)
// must not overtake it.
func (c *conn) send(msg Obj, wait bool) {
	m := outMsg{data: c.encodeMsg(msg)}
	if wait {
		m.done = make(chan struct{})
	}
	select {
	case c.out <- m:
	case <-c.dead:
		return
	}
	if wait {
		select {
		case <-m.done:
		case <-c.dead:
		}
	}
}

// sendEvent queues an event without ever waiting: a client whose queue is
// full is dropped, its fds closed as at any disconnect.
func (c *conn) sendEvent(data []byte) {
	select {
	case c.out <- outMsg{data: data}:
	case <-c.dead:
	default:
		c.kill()
	}
}

// Emit sends an event to every connection past capabilities negotiation.
// It never waits on a client, so it may be called from an IO path or with
// locks held.
func (s *Server) Emit(event string, data Obj) {
	now := time.Now()
	msg := Obj{
		{"timestamp", Obj{{"seconds", now.Unix()}, {"microseconds", int64(now.Nanosecond() / 1000)}}},
		{"event", event},
	}
	if data != nil {
		msg = append(msg, Member{"data", data})
	}
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var encoded [2][]byte // by pretty
	for _, c := range conns {
		if !c.negotiated.Load() {
			continue
		}
		i := 0
		if c.mon.pretty {
			i = 1
		}
		if encoded[i] == nil {
			encoded[i] = c.encodeMsg(msg)
		}
		c.sendEvent(encoded[i])
	}
}
