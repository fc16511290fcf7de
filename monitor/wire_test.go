package monitor

import (
	"bufio"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
	"minivmm/qemuopen"
)

// listening starts a server with one monitor socket; everything is closed
// at cleanup.
func listening(t *testing.T) (*Server, string) {
	t.Helper()
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	srv := NewServer(reg, g, NewVM(false))
	t.Cleanup(func() {
		srv.Close()
		g.Close()
		reg.CloseAll()
	})
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	if _, err := srv.Listen(sock, false); err != nil {
		t.Fatal(err)
	}
	return srv, sock
}

func errorDesc(t *testing.T, r map[string]any) string {
	t.Helper()
	e, ok := r["error"].(map[string]any)
	if !ok {
		t.Fatalf("expected an error, got %v", r)
	}
	return e["desc"].(string)
}

// TestDeepNestingAnsweredAtOnce: 100,000 '[' and nothing more are
// answered as soon as they arrive, as QEMU answers them; the connection
// stays usable once the message ends.
func TestDeepNestingAnsweredAtOnce(t *testing.T) {
	fdtest.Check(t)
	_, sock := listening(t)
	c := qmptest.Dial(t, sock)
	defer c.Close()
	c.Negotiate()
	c.Send(strings.Repeat("[", 100000))
	if got := errorDesc(t, c.Reply()); got != "JSON nesting depth limit exceeded" {
		t.Errorf("got %q", got)
	}
	c.Send(strings.Repeat("]", 100000) + `{"execute": "query-status", "id": 1}`)
	if r := c.Reply(); r["return"] == nil {
		t.Errorf("after the deep message: %v", r)
	}
}

// TestListenBacklogBurst: a burst of non-blocking connects, as a
// management layer reconnecting to many VMs makes, is not refused.
func TestListenBacklogBurst(t *testing.T) {
	fdtest.Check(t)
	_, sock := listening(t)
	var fds []int
	defer func() { closeFds(fds) }()
	for i := range 100 {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
			t.Fatalf("connect %d of 100: %v", i+1, err)
		}
	}
}

// TestOOBNotBehindInband: with oob enabled, exec-oob is answered while an
// in-band command is still running, with QEMU's errors.
func TestOOBNotBehindInband(t *testing.T) {
	fdtest.Check(t)
	srv, sock := listening(t)

	plain := qmptest.Dial(t, sock)
	defer plain.Close()
	if caps := plain.Greeting()["QMP"].(map[string]any)["capabilities"].([]any); len(caps) != 1 || caps[0] != "oob" {
		t.Errorf("greeting capabilities %v, want [oob]", caps)
	}
	plain.Negotiate()
	plain.Send(`{"exec-oob": "query-status", "id": 1}`)
	if got := errorDesc(t, plain.Reply()); got != "QMP input member 'exec-oob' is unexpected" {
		t.Errorf("exec-oob without oob enabled: %q", got)
	}

	c := qmptest.Dial(t, sock)
	defer c.Close()
	if r := c.Execute("qmp_capabilities", map[string]any{"enable": []string{"oob"}}); r["return"] == nil {
		t.Fatalf("enabling oob: %v", r)
	}
	// "stop" waits for the VM's lock, which the test holds: the in-band
	// worker is stuck until it lets go.
	srv.vm.mu.Lock()
	locked := true
	defer func() {
		if locked {
			srv.vm.mu.Unlock()
		}
	}()
	c.Send(`{"execute": "stop", "id": "inband"}`)
	for _, tc := range []struct{ send, id, desc string }{
		{`{"exec-oob": "query-status", "id": "o1"}`, "o1", "The command query-status does not support OOB"},
		{`{"exec-oob": "nosuch", "id": "o2"}`, "o2", "The command nosuch has not been found"},
		{`{"exec-oob": 1, "id": "o4"}`, "o4", "QMP input member 'exec-oob' must be a string"},
		{`{"exec-oob": "qmp_capabilities", "id": "o5"}`, "o5", "The command qmp_capabilities does not support OOB"},
	} {
		c.Send(tc.send)
		r := c.Reply()
		if r["id"] != tc.id {
			t.Fatalf("%s: reply %v came first, want id %s (the in-band stop must not hold it up)", tc.send, r, tc.id)
		}
		if got := errorDesc(t, r); got != tc.desc {
			t.Errorf("%s: %q, want %q", tc.send, got, tc.desc)
		}
	}
	// With "execute" too, a message is in-band (QEMU's qmp_is_oob): it
	// waits its turn.
	c.Send(`{"exec-oob": "stop", "execute": "stop", "id": "both"}`)
	srv.vm.mu.Unlock()
	locked = false
	if r := c.Reply(); r["id"] != "inband" || r["return"] == nil {
		t.Errorf("in-band reply %v", r)
	}
	if r := c.Reply(); r["id"] != "both" || errorDesc(t, r) != "QMP input member 'execute' clashes with 'exec-oob'" {
		t.Errorf("exec-oob with execute: %v", r)
	}
	c.Event("STOP", 5*time.Second)
}

// TestCapabilityErrors: qmp_capabilities refuses what the greeting does
// not offer, in QEMU's words, and stays unnegotiated.
func TestCapabilityErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"execute":"qmp_capabilities","arguments":{"enable":["foo"]}}`, `{"error": {"class": "GenericError", "desc": "Parameter 'null' does not accept value 'foo'"}}`},
		{`{"execute":"qmp_capabilities","arguments":{"enable":["oob","foo"]}}`, `{"error": {"class": "GenericError", "desc": "Parameter 'null' does not accept value 'foo'"}}`},
		{`{"execute":"qmp_capabilities","arguments":{"enable":"oob"}}`, `{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'enable', expected: array"}}`},
		{`{"execute":"qmp_capabilities","arguments":{"enable":["oob","oob"]}}`, `{"return": {}}`},
	} {
		c := bareConn(t, false)
		if got := run(c, tc.in); got != tc.want {
			t.Errorf("%s\n got %s\nwant %s", tc.in, got, tc.want)
		}
		if want := strings.HasPrefix(tc.want, `{"return"`); c.negotiated.Load() != want || c.oob.Load() != want {
			t.Errorf("%s: negotiated %v, oob %v", tc.in, c.negotiated.Load(), c.oob.Load())
		}
	}
}

// TestSlowClientDropped: events go to each client through its own bounded
// queue. A client that never reads is dropped (the fd it left with the
// connection and the one it added to a set closed) while the emitter never waits and a client that
// reads gets every event.
func TestSlowClientDropped(t *testing.T) {
	fdtest.Check(t)
	srv, sock := listening(t)

	good := qmptest.Dial(t, sock)
	defer good.Close()
	good.Negotiate()
	// Count the good client's events on a raw reader from here on.
	var goodEvents atomic.Int64
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		lines := bufio.NewScanner(good.Conn())
		lines.Buffer(make([]byte, 64<<10), 64<<10)
		for lines.Scan() {
			if strings.Contains(lines.Text(), `"event": "RESUME"`) {
				goodEvents.Add(1)
			}
		}
	}()

	slow := qmptest.Dial(t, sock)
	defer slow.Close()
	slow.Negotiate()
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	if r := slow.Execute("add-fd", map[string]any{"fdset-id": 7}, pipe[1]); r["return"] == nil {
		t.Fatalf("add-fd: %v", r)
	}
	slow.Send(" ", pipe[0]) // held by the connection: closed when it is dropped
	closeFds(pipe[:])
	time.Sleep(50 * time.Millisecond) // let the VMM read it
	withSlow := fdtest.Count()
	conns := func() int {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.conns)
	}

	emitted := 0
	emitterDone := make(chan struct{})
	go func() {
		defer close(emitterDone)
		// In batches, each once the good client has read the last, so
		// that a busy machine cannot make it fall behind; the slow
		// client never reads and must fill its queue.
		for conns() == 2 && emitted < 1_000_000 {
			for range 50 {
				srv.Emit("RESUME", nil)
				emitted++
			}
			for deadline := time.Now().Add(10 * time.Second); goodEvents.Load() < int64(emitted) && time.Now().Before(deadline); {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	select {
	case <-emitterDone:
	case <-time.After(60 * time.Second): // a hang guard only
		t.Fatal("the emitter is stuck")
	}
	if n := conns(); n != 1 {
		t.Fatalf("%d connections after %d events, want the slow one dropped", n, emitted)
	}
	// The dropped connection's socket and held fd are closed.
	deadline := time.Now().Add(5 * time.Second)
	for fdtest.Count() != withSlow-3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := fdtest.Count(); got != withSlow-3 {
		t.Errorf("%d fds open after the drop, want %d (its socket, held fd and fdset fd closed)", got, withSlow-3)
	}
	if sets := srv.fds.Query(); len(sets) != 0 {
		t.Errorf("fdsets left after the drop: %v", sets)
	}
	// The good client got every event and still works.
	goodConn := good.Conn()
	deadline = time.Now().Add(10 * time.Second)
	for goodEvents.Load() < int64(emitted) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := goodEvents.Load(); got != int64(emitted) {
		t.Errorf("the good client got %d of %d events", got, emitted)
	}
	if _, err := goodConn.Write([]byte(`{"execute": "query-status"}`)); err != nil {
		t.Errorf("good client: %v", err)
	}
	goodConn.CloseWrite()
	select {
	case <-readerDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the good client's connection did not end after its half-close")
	}
	t.Logf("slow client dropped after %d events", emitted)
}

// TestCloseFlushes: what was queued for a client before the server
// closes (SHUTDOWN at exit) still reaches it.
func TestCloseFlushes(t *testing.T) {
	fdtest.Check(t)
	srv, sock := listening(t)
	c := qmptest.Dial(t, sock)
	defer c.Close()
	c.Negotiate()
	srv.vm.Shutdown("host-signal")
	srv.Close()
	if ev := c.Event("SHUTDOWN", 5*time.Second); ev["data"].(map[string]any)["reason"] != "host-signal" {
		t.Errorf("SHUTDOWN = %v", ev)
	}
	c.WaitClosed(5 * time.Second)
}

// TestManyHostileClients: clients that pass fds in every framing, pipeline
// commands with and without oob, send garbage and leave mid-message or
// without reading, all at once while events are emitted, leave no fd, no
// fdset and no connection behind.
func TestManyHostileClients(t *testing.T) {
	fdtest.Check(t)
	srv, sock := listening(t)
	stopEvents := make(chan struct{})
	eventsDone := make(chan struct{})
	go func() {
		defer close(eventsDone)
		for {
			select {
			case <-stopEvents:
				return
			default:
				srv.Emit("RESUME", nil)
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	const clients = 40
	errs := make(chan error, clients)
	for i := range clients {
		go func() { errs <- hostileClient(sock, uint64(i)) }()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	close(stopEvents)
	<-eventsDone
	deadline := time.Now().Add(10 * time.Second)
	for {
		srv.mu.Lock()
		n := len(srv.conns)
		srv.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if sets := srv.fds.Query(); len(sets) != 0 {
		t.Errorf("fdsets left: %v", sets)
	}
}

func hostileClient(sock string, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	uc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return err
	}
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(20 * time.Second))
	reading := rng.IntN(3) != 0
	if reading {
		go io.Copy(io.Discard, uc)
	}
	send := func(data string, withFds int) error {
		if withFds == 0 {
			_, err := uc.Write([]byte(data))
			return err
		}
		var fds []int
		for range withFds {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				return err
			}
			fds = append(fds, p[:]...)
		}
		_, _, err := uc.WriteMsgUnix([]byte(data), unix.UnixRights(fds...), nil)
		closeFds(fds)
		return err
	}
	caps := `{"execute": "qmp_capabilities"}`
	if rng.IntN(2) == 0 {
		caps = `{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}`
	}
	if err := send(caps, 0); err != nil {
		return nil // dropped already: fine
	}
	pieces := []string{
		" ",
		`{"execute": "add-fd", "arguments": {"fdset-id": 1}}`,
		`{"execute": "add-fd"}`,
		`{"execute": "getfd", "arguments": {"fdname": "x"}}`,
		`{"execute": "closefd", "arguments": {"fdname": "x"}}`,
		`{"execute": "query-status"}`,
		`{"exec-oob": "query-status", "id": 1}`,
		`{"execute": "query-fdsets"}`,
		`{"execute": "add-fd", "arguments": {"fdset-id": -1}}`,
		`{"execute": "add-fd", "arguments": {"bogus": 1}}`,
		`{"execute": "add-fd",`,
		`"arguments": {}}`,
		"\xff", "[[[[", "]]]]", `{"execute": "remove-fd", "arguments": {"fdset-id": 1}}`,
	}
	for range 20 + rng.IntN(60) {
		if err := send(pieces[rng.IntN(len(pieces))], rng.IntN(4)); err != nil {
			return nil // the server may drop a client that does not read
		}
	}
	if rng.IntN(2) == 0 {
		send(`{"execute": "add-fd", "arguments": {"fdset-id": 9}`, 2) // left unfinished
	}
	return nil
}
