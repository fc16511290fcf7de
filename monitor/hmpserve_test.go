package monitor

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

func newTestServer(t *testing.T) *Server {
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	srv := NewServer(reg, g, NewVM(false))
	t.Cleanup(func() { srv.Close(); g.Close(); reg.CloseAll() })
	return srv
}

// readUntil reads from r until the text read ends with suffix.
func readUntil(t *testing.T, r *bufio.Reader, suffix string) string {
	t.Helper()
	var b strings.Builder
	for !strings.HasSuffix(b.String(), suffix) {
		c, err := r.ReadByte()
		if err != nil {
			t.Fatalf("after %q: %v", b.String(), err)
		}
		b.WriteByte(c)
	}
	return b.String()
}

// TestHMPSocket: a client of a -monitor unix socket gets QEMU's banner and
// prompt, its lines echoed and answered; quit ends the VMM.
func TestHMPSocket(t *testing.T) {
	fdtest.Check(t)
	srv := newTestServer(t)
	sock := filepath.Join(t.TempDir(), "hmp.sock")
	m, err := srv.ListenHMP(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v %v", st, err)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if got, want := readUntil(t, r, "(qemu) "), "QEMU 9.1.0 monitor - type 'help' for more information\r\n(qemu) "; got != strings.Replace(want, "9.1.0", QEMUVersion(), 1) {
		t.Errorf("banner %q", got)
	}
	select {
	case <-m.Connected():
	default:
		t.Error("Connected not closed after a client connected")
	}
	for _, tc := range []struct{ in, want string }{
		{"info status\n", "info status\r\nVM status: running\r\n(qemu) "},
		{"stop\r\n", "stop\r\n(qemu) "},
		{"info status\n", "info status\r\nVM status: paused\r\n(qemu) "},
		{"\n", "\r\n(qemu) "},
		{"nosuch\n", "nosuch\r\nunknown command: 'nosuch'\r\n(qemu) "},
		{strings.Repeat("x", 10000) + "\n", strings.Repeat("x", maxHMPLine) + "\r\nunknown command: '" + strings.Repeat("x", maxHMPLine) + "'\r\n(qemu) "},
	} {
		io.WriteString(c, tc.in)
		if got := readUntil(t, r, "(qemu) "); got != tc.want {
			t.Errorf("%.20q: got %.80q, want %.80q", tc.in, got, tc.want)
		}
	}
	io.WriteString(c, "quit\n")
	select {
	case <-srv.vm.ExitRequested():
	case <-time.After(5 * time.Second):
		t.Fatal("quit did not ask the VMM to exit")
	}
	m.Close()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

// TestHMPStdio: a session on a pipe (stdio not a terminal) echoes and
// answers, and ends at EOF.
func TestHMPStdio(t *testing.T) {
	srv := newTestServer(t)
	in := strings.NewReader("info name\nsystem_reset\ninfo version\n")
	var out strings.Builder
	m := srv.ServeHMP(in, &out, true)
	m.wg.Wait()
	want := "QEMU " + QEMUVersion() + " monitor - type 'help' for more information\r\n(qemu) info name\r\n(qemu) system_reset\r\n(qemu) info version\r\n" + versionText() + "\r\n(qemu) "
	if out.String() != want {
		t.Errorf("got %q\nwant %q", out.String(), want)
	}
}
