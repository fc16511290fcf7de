// Package qmptest is a QMP client for tests: it talks to a QMP monitor
// (minivmm's or a real QEMU's) over a unix socket, passes file descriptors
// with SCM_RIGHTS, and fails the test, with what it received so far, when
// an answer does not come in time.
//
// Messages are decoded with json.Decoder.UseNumber, so numbers are
// json.Number values and ids up to 2^63-1 (and beyond) stay exact.
package qmptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultTimeout is how long a Client waits for a message before failing
// the test, and how long Dial keeps retrying.
const DefaultTimeout = 10 * time.Second

// keepRaw is how many of the most recently received bytes a Client keeps
// for failure messages.
const keepRaw = 4096

// Client is a QMP connection for a test. Its methods must be called from
// the test's goroutine (they call t.Fatalf).
type Client struct {
	t        testing.TB
	conn     *net.UnixConn
	dec      *json.Decoder
	raw      *tailBuffer
	greeting map[string]any
	events   []map[string]any // events read but not yet returned by Event
	replies  []map[string]any // non-events read but not yet returned by Reply
	timeout  time.Duration
	closed   bool
}

// Dial connects to the QMP socket at path, retrying for up to
// DefaultTimeout while the socket does not exist or refuses connections,
// and reads the greeting. The connection is closed at test cleanup.
func Dial(t testing.TB, path string) *Client {
	t.Helper()
	addr := &net.UnixAddr{Name: path, Net: "unix"}
	deadline := time.Now().Add(DefaultTimeout)
	var conn *net.UnixConn
	for {
		var err error
		conn, err = net.DialUnix("unix", nil, addr)
		if err == nil {
			break
		}
		retry := errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
		if !retry || time.Now().After(deadline) {
			t.Fatalf("qmptest: connecting to %s: %v", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := &Client{t: t, conn: conn, raw: &tailBuffer{max: keepRaw}, timeout: DefaultTimeout}
	c.dec = json.NewDecoder(io.TeeReader(conn, c.raw))
	c.dec.UseNumber()
	t.Cleanup(c.Close)
	g := c.read(time.Now().Add(c.timeout), "the greeting")
	if _, ok := g["QMP"]; !ok {
		t.Fatalf("qmptest: expected a greeting with member \"QMP\", got %s", show(g))
	}
	c.greeting = g
	return c
}

// Greeting is the greeting message the server sent on connect.
func (c *Client) Greeting() map[string]any { return c.greeting }

// SetTimeout changes how long Reply and Execute wait (DefaultTimeout
// unless changed).
func (c *Client) SetTimeout(d time.Duration) { c.timeout = d }

// Conn is the underlying connection, for tests that need to do something
// unusual with it (half-close, raw reads).
func (c *Client) Conn() *net.UnixConn { return c.conn }

// Negotiate sends qmp_capabilities and fails the test unless it succeeds.
func (c *Client) Negotiate() {
	c.t.Helper()
	r := c.Execute("qmp_capabilities", nil)
	if _, ok := r["return"]; !ok {
		c.t.Fatalf("qmptest: qmp_capabilities failed: %s", show(r))
	}
}

// Send writes raw as is. When fds are given they travel as SCM_RIGHTS
// ancillary data of one sendmsg call that carries raw (if the kernel takes
// only part of a large raw, the rest follows in further writes without
// fds). raw must not be empty when fds are given: a stream socket cannot
// carry fds without data, and Go would add a NUL byte.
func (c *Client) Send(raw string, fds ...int) {
	c.t.Helper()
	if err := c.conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		c.t.Fatalf("qmptest: %v", err)
	}
	b := []byte(raw)
	if len(fds) > 0 {
		if len(b) == 0 {
			c.t.Fatalf("qmptest: Send with fds needs some data to carry them")
		}
		n, _, err := c.conn.WriteMsgUnix(b, syscall.UnixRights(fds...), nil)
		if err != nil {
			c.t.Fatalf("qmptest: sendmsg with %d fds: %v", len(fds), err)
		}
		b = b[n:]
	}
	if len(b) > 0 {
		if _, err := c.conn.Write(b); err != nil {
			c.t.Fatalf("qmptest: write: %v", err)
		}
	}
}

// Execute sends {"execute": cmd, "arguments": args} ("arguments" left out
// when args is nil), with fds attached if given, and returns the reply:
// the next message that is not an event. Events that arrive meanwhile are
// kept for Event.
func (c *Client) Execute(cmd string, args map[string]any, fds ...int) map[string]any {
	c.t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	name, err := json.Marshal(cmd)
	if err != nil {
		c.t.Fatalf("qmptest: %v", err)
	}
	buf.WriteString(`{"execute": `)
	buf.Write(name)
	if args != nil {
		buf.WriteString(`, "arguments": `)
		if err := enc.Encode(args); err != nil {
			c.t.Fatalf("qmptest: encoding arguments of %s: %v", cmd, err)
		}
		buf.Truncate(buf.Len() - 1) // Encode's newline
	}
	buf.WriteString("}\n")
	c.Send(buf.String(), fds...)
	return c.Reply()
}

// Reply returns the next message that is not an event (normally one with
// "return" or "error"), keeping events that come first for Event.
func (c *Client) Reply() map[string]any {
	c.t.Helper()
	if len(c.replies) > 0 {
		r := c.replies[0]
		c.replies = c.replies[1:]
		return r
	}
	deadline := time.Now().Add(c.timeout)
	for {
		m := c.read(deadline, "a reply")
		if _, ok := m["event"]; ok {
			c.events = append(c.events, m)
			continue
		}
		return m
	}
}

// Event returns the first event named name, from those already received or
// from the wire, waiting up to timeout. Other events stay queued; replies
// read meanwhile are kept for Reply.
func (c *Client) Event(name string, timeout time.Duration) map[string]any {
	c.t.Helper()
	for i, e := range c.events {
		if e["event"] == name {
			c.events = append(c.events[:i:i], c.events[i+1:]...)
			return e
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		m := c.read(deadline, "event "+name)
		ev, ok := m["event"]
		switch {
		case !ok:
			c.replies = append(c.replies, m)
		case ev == name:
			return m
		default:
			c.events = append(c.events, m)
		}
	}
}

// WaitClosed reads until the server closes the connection (EOF or
// ECONNRESET, which QEMU causes when it exits with input unread), queueing
// whatever arrives, and fails the test if that takes longer than timeout.
func (c *Client) WaitClosed(timeout time.Duration) {
	c.t.Helper()
	if err := c.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		c.t.Fatalf("qmptest: %v", err)
	}
	for {
		var v any
		err := c.dec.Decode(&v)
		if err == nil {
			if m, ok := v.(map[string]any); ok {
				if _, ev := m["event"]; ev {
					c.events = append(c.events, m)
				} else {
					c.replies = append(c.replies, m)
				}
				continue
			}
			c.t.Fatalf("qmptest: message is not a JSON object: %s\n%s", show(v), c.received())
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.t.Fatalf("qmptest: connection still open after %v\n%s", timeout, c.received())
		}
		c.t.Fatalf("qmptest: waiting for the connection to close: %v\n%s", err, c.received())
	}
}

// Close closes the connection. It is safe to call more than once.
func (c *Client) Close() {
	if c.closed {
		return
	}
	c.closed = true
	c.conn.Close()
}

// read decodes the next message, failing the test on timeout, EOF, a
// decoding error or a message that is not an object.
func (c *Client) read(deadline time.Time, what string) map[string]any {
	c.t.Helper()
	if err := c.conn.SetReadDeadline(deadline); err != nil {
		c.t.Fatalf("qmptest: %v", err)
	}
	var v any
	if err := c.dec.Decode(&v); err != nil {
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			c.t.Fatalf("qmptest: timed out waiting for %s\n%s", what, c.received())
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
			c.t.Fatalf("qmptest: connection closed while waiting for %s\n%s", what, c.received())
		default:
			c.t.Fatalf("qmptest: reading %s: %v\n%s", what, err, c.received())
		}
	}
	m, ok := v.(map[string]any)
	if !ok {
		c.t.Fatalf("qmptest: message is not a JSON object: %s\n%s", show(v), c.received())
	}
	return m
}

// received describes what came in so far, for failure messages.
func (c *Client) received() string {
	var b strings.Builder
	fmt.Fprintf(&b, "last bytes received (%d in all): %q", c.raw.total, c.raw.String())
	for _, e := range c.events {
		fmt.Fprintf(&b, "\nqueued event: %s", show(e))
	}
	for _, r := range c.replies {
		fmt.Fprintf(&b, "\nqueued reply: %s", show(r))
	}
	return b.String()
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%#v", v)
	}
	return string(b)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max   int
	buf   []byte
	total int64
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.total += int64(len(p))
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string { return string(b.buf) }

// Normalize returns a copy of a decoded message with what legitimately
// differs between two VMMs taken out, so that replies compare equal with
// reflect.DeepEqual:
//   - every numeric "fd" member (add-fd replies, query-fdsets entries) is
//     replaced by the string "<fd:N>", N numbering distinct fd values in
//     order of first appearance (maps are walked in sorted key order,
//     lists in order), so equal fds stay equal and distinct ones distinct;
//   - "timestamp" is dropped from events (objects with an "event" member).
func Normalize(v any) any {
	n := &normalizer{fds: map[string]string{}}
	return n.walk(v)
}

type normalizer struct {
	fds map[string]string
}

func (n *normalizer) walk(v any) any {
	switch v := v.(type) {
	case map[string]any:
		_, isEvent := v["event"]
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make(map[string]any, len(v))
		for _, k := range keys {
			if isEvent && k == "timestamp" {
				continue
			}
			if k == "fd" {
				if s, ok := numberText(v[k]); ok {
					out[k] = n.placeholder(s)
					continue
				}
			}
			out[k] = n.walk(v[k])
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = n.walk(e)
		}
		return out
	case []map[string]any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = n.walk(e)
		}
		return out
	default:
		return v
	}
}

func (n *normalizer) placeholder(num string) string {
	p, ok := n.fds[num]
	if !ok {
		p = fmt.Sprintf("<fd:%d>", len(n.fds))
		n.fds[num] = p
	}
	return p
}

// numberText is the decimal text of a JSON number however it was decoded.
func numberText(v any) (string, bool) {
	switch v := v.(type) {
	case json.Number:
		return v.String(), true
	case float64:
		return fmt.Sprint(v), true
	case int:
		return fmt.Sprint(v), true
	case int64:
		return fmt.Sprint(v), true
	}
	return "", false
}

// QEMUBinary is the QEMU that StartQEMU runs.
const QEMUBinary = "qemu-system-x86_64"

// StartQEMU starts QEMUBinary -machine none -nodefaults -display none
// -qmp unix:DIR/qmp.sock,server=on,wait=off followed by extraArgs, waits
// until the socket exists, and kills QEMU at test cleanup. It skips the
// test when QEMU is not installed, except under CI=true, where it fails.
func StartQEMU(t testing.TB, extraArgs ...string) (sockPath string, pid int) {
	t.Helper()
	return StartQEMUFiles(t, nil, extraArgs...)
}

// StartQEMUFiles is StartQEMU with files inherited by QEMU as fds 3, 4, ...
// (for -add-fd fd=3,...).
func StartQEMUFiles(t testing.TB, files []*os.File, extraArgs ...string) (sockPath string, pid int) {
	t.Helper()
	bin, err := exec.LookPath(QEMUBinary)
	if err != nil {
		msg := QEMUBinary + " not installed; apt-get install qemu-system-x86"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	p := Start(t, bin, files, extraArgs...)
	return p.Sock, p.Pid
}

// Process is a VMM started by [Start]: QEMU, or minivmm, which takes the
// same options.
type Process struct {
	Sock string // its QMP socket
	Pid  int

	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan struct{}
	waitErr error
}

// Start runs bin with "-machine none -nodefaults -display none -qmp
// unix:SOCK,server=on,wait=off" and extraArgs, files as fds 3, 4, ...; it
// returns once the QMP socket exists and kills the process at test cleanup.
func Start(t testing.TB, bin string, files []*os.File, extraArgs ...string) *Process {
	t.Helper()
	dir := t.TempDir()
	sockPath := filepath.Join(dir, "qmp.sock")
	if len(sockPath) > 100 { // sun_path holds 108 bytes
		short, err := os.MkdirTemp("/tmp", "qmp")
		if err != nil {
			t.Fatalf("qmptest: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(short) })
		sockPath = filepath.Join(short, "qmp.sock")
	}
	args := append([]string{"-machine", "none", "-nodefaults", "-display", "none",
		"-qmp", "unix:" + sockPath + ",server=on,wait=off"}, extraArgs...)
	p := StartArgs(t, bin, files, args...)
	p.Sock = sockPath
	deadline := time.Now().Add(DefaultTimeout)
	for {
		if _, err := os.Stat(sockPath); err == nil {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("qmptest: %s exited before creating its QMP socket (%v): %s",
				bin, p.waitErr, p.out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("qmptest: %s did not create %s within %v: %s", bin, sockPath, DefaultTimeout, p.out.String())
		}
	}
}

// StartArgs runs bin with exactly args (and files as fds 3, 4, ...),
// killing it at test cleanup if it is still running.
func StartArgs(t testing.TB, bin string, files []*os.File, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	p := &Process{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	cmd.ExtraFiles = files
	if err := cmd.Start(); err != nil {
		t.Fatalf("qmptest: starting %s: %v", bin, err)
	}
	p.Pid = cmd.Process.Pid
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() && p.out.Len() > 0 {
			t.Logf("%s output:\n%s", filepath.Base(bin), p.out.String())
		}
	})
	return p
}

// Output is what the process has written to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits up to timeout for the process to exit and returns its exit
// status (-1 if it did not exit in time or was killed by a signal).
func (p *Process) Wait(timeout time.Duration) int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		return -1
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

// Drain returns, and forgets, the events and replies that have been
// received but not yet returned by Event or Reply (after Reply: the events
// that came before its reply; after WaitClosed: everything that came
// before the connection closed), each kind in order of arrival.
func (c *Client) Drain() (events, replies []map[string]any) {
	events, replies = c.events, c.replies
	c.events, c.replies = nil, nil
	return events, replies
}
