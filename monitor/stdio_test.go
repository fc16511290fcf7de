package monitor

import (
	"bufio"
	"io"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
)

// TestQMPStdio: a QMP session on a reader and a writer (-qmp stdio) is
// any client's session: greeting, negotiation, replies; quit's reply and
// the SHUTDOWN event are out before Close returns, and the socket pair
// bridging it is gone after.
func TestQMPStdio(t *testing.T) {
	fdtest.Check(t)
	srv := newTestServer(t)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	m, err := srv.ServeStdio(inR, outW, false)
	if err != nil {
		t.Fatal(err)
	}
	if m.Addr() != "stdio" {
		t.Errorf("Addr() = %q", m.Addr())
	}
	select {
	case <-m.Connected():
	default:
		t.Error("a stdio monitor is connected from the start")
	}
	out := bufio.NewReader(outR)
	line := func() string {
		t.Helper()
		s, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", s, err)
		}
		return s
	}
	if g := line(); !strings.HasPrefix(g, `{"QMP": {"version": {"qemu": `) || !strings.HasSuffix(g, `"capabilities": ["oob"]}}`+"\r\n") {
		t.Fatalf("greeting %q", g)
	}
	for _, ex := range []struct{ send, want string }{
		{`{"execute": "query-status"}`, `{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}`},
		{`{"execute": "qmp_capabilities"}`, `{"return": {}}`},
		{`{"execute": "query-status", "id": 7}`, `{"return": {"status": "running", "running": true}, "id": 7}`},
		{`{"execute": "getfd", "arguments": {"fdname": "x"}}`, `{"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}}`},
	} {
		io.WriteString(inW, ex.send+"\n")
		if got := line(); got != ex.want+"\r\n" {
			t.Errorf("%s: got %q, want %q", ex.send, got, ex.want)
		}
	}
	// quit: the reply, then the VM asks to exit; the caller closes the
	// server, which must flush the session to the writer first.
	io.WriteString(inW, `{"execute": "quit"}`+"\n")
	rest := make(chan string)
	go func() {
		b, _ := io.ReadAll(out)
		rest <- string(b)
	}()
	<-srv.vm.ExitRequested()
	srv.Close()
	outW.Close()
	got := <-rest
	if !strings.Contains(got, `{"return": {}}`) || !strings.Contains(got, `"event": "SHUTDOWN"`) {
		t.Errorf("after quit: %q", got)
	}
	inW.Close() // the stdin copier ends at EOF, as with a real stdin
}
