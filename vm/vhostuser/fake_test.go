package vhostuser

import (
	"encoding/binary"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeDevice records what the session asks of it.
type fakeDevice struct {
	mu      sync.Mutex
	acked   uint64
	config  []byte
	started []QueueConfig
	queues  []*fakeQueue
}

func (d *fakeDevice) Features() uint64 { return 1<<32 | 1<<28 | 1<<6 }
func (d *fakeDevice) NumQueues() int   { return 2 }
func (d *fakeDevice) Config() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.config == nil {
		d.config = make([]byte, 60)
		for i := range d.config {
			d.config[i] = byte(i)
		}
	}
	return d.config
}
func (d *fakeDevice) SetConfig(off uint32, data []byte) error {
	d.Config()
	d.mu.Lock()
	defer d.mu.Unlock()
	if int(off)+len(data) > len(d.config) {
		return protoErr("config write out of range")
	}
	copy(d.config[off:], data)
	return nil
}
func (d *fakeDevice) Reset()             {}
func (d *fakeDevice) Stop()              {}
func (d *fakeDevice) Start()             {}
func (d *fakeDevice) Ack(f uint64) error { d.mu.Lock(); d.acked = f; d.mu.Unlock(); return nil }
func (d *fakeDevice) StartQueue(c QueueConfig) (Queue, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := &fakeQueue{cfg: c, kicks: make(chan struct{}, 100)}
	d.started = append(d.started, c)
	d.queues = append(d.queues, q)
	return q, nil
}

func (d *fakeDevice) lastQueue() *fakeQueue {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.queues) == 0 {
		return nil
	}
	return d.queues[len(d.queues)-1]
}

type fakeQueue struct {
	cfg     QueueConfig
	kicks   chan struct{}
	mu      sync.Mutex
	stopped bool
}

func (q *fakeQueue) Kick() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		panic("kick after stop")
	}
	select {
	case q.kicks <- struct{}{}:
	default:
	}
}
func (q *fakeQueue) Stop() uint16 {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stopped = true
	return q.cfg.Base + 7
}

// client is a scripted front end.
type client struct {
	t *testing.T
	c *net.UnixConn
}

func dial(t *testing.T, path string) *client {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	return &client{t, c}
}

func (c *client) close() { c.c.Close() }

// send sends a message; fds are the client's and stay open here.
func (c *client) send(req Request, flags uint32, payload []byte, fds ...int) {
	c.t.Helper()
	if err := writeMessage(c.c, &Message{Request: req, Flags: flags, Payload: payload, Fds: fds}); err != nil {
		c.t.Fatal(err)
	}
}

// sendFds sends a message with fds and closes the client's copies, so
// that the back end holds the only ones.
func (c *client) sendFds(req Request, payload []byte, fds ...int) {
	c.t.Helper()
	c.send(req, flagVersion, payload, fds...)
	closeFds(fds)
}

func (c *client) recv() *Message {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [headerSize]byte
	if _, err := readFull(c.c, hdr[:]); err != nil {
		c.t.Fatalf("reading reply: %v", err)
	}
	le := binary.LittleEndian
	m := &Message{Request: Request(le.Uint32(hdr[:])), Flags: le.Uint32(hdr[4:])}
	m.Payload = make([]byte, le.Uint32(hdr[8:]))
	if _, err := readFull(c.c, m.Payload); err != nil {
		c.t.Fatalf("reading reply payload: %v", err)
	}
	return m
}

// call sends a request and returns its reply's payload.
func (c *client) call(req Request, payload []byte) []byte {
	c.t.Helper()
	c.send(req, flagVersion, payload)
	r := c.recv()
	if r.Request != req || r.Flags != flagVersion|flagReply {
		c.t.Fatalf("%v: reply %v flags %#x", req, r.Request, r.Flags)
	}
	return r.Payload
}

// expectClosed waits for the back end to hang up.
func (c *client) expectClosed() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [64]byte
	for {
		_, err := c.c.Read(b[:])
		if err != nil {
			if os.IsTimeout(err) {
				c.t.Fatal("back end did not close the connection")
			}
			return
		}
	}
}

func readFull(c *net.UnixConn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func eventfd(t *testing.T) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func memfd(t *testing.T, size int64) int {
	t.Helper()
	fd, err := unix.MemfdCreate("test-guest", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	return fd
}

func (d *fakeDevice) ackedFeatures() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.acked
}

func (q *fakeQueue) isStopped() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.stopped
}
