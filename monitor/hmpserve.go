package monitor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/qemuopen"
)

// HMPMonitor is a human monitor (QEMU's -monitor, -mon mode=readline): a
// unix socket each client of which gets QEMU's banner and "(qemu) "
// prompt, or the process's stdin and stdout. It reads whole lines: there
// is no line editing, history or completion (a terminal's own line
// discipline edits stdio lines), and a socket client's lines are echoed
// back once, as QEMU's readline shows them.
type HMPMonitor struct {
	srv  *Server
	ln   *net.UnixListener // nil for stdio
	path string            // removed on close; empty unless we bound it

	connected     chan struct{}
	connectedOnce sync.Once

	mu     sync.Mutex
	conns  map[io.Closer]struct{}
	closed bool
	wg     sync.WaitGroup
}

// maxHMPLine bounds a command line; QEMU's readline stops at 4 KiB.
const maxHMPLine = 4096

func (s *Server) newHMP() *HMPMonitor {
	return &HMPMonitor{srv: s, connected: make(chan struct{}), conns: map[io.Closer]struct{}{}}
}

// ListenHMP serves a human monitor on a new unix socket at path (mode
// 0600; a stale socket is replaced, as Listen does).
func (s *Server) ListenHMP(path string) (*HMPMonitor, error) {
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("Failed to bind socket to %s: file exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("Failed to bind socket to %s: Address already in use", path)
		}
		os.Remove(path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("Failed to create socket: %s", errText(err))
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("Failed to bind socket to %s: %s", path, errText(err))
	}
	if err := os.Chmod(path, 0o600); err == nil { // before listen: no window open to others
		err = unix.Listen(fd, 16)
	}
	if err != nil {
		unix.Close(fd)
		os.Remove(path)
		return nil, fmt.Errorf("Failed to listen on %s: %s", path, errText(err))
	}
	m, err := s.serveHMPFd(fd)
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	m.path = path
	return m, nil
}

// ListenHMPFd serves a human monitor on an inherited listening socket. It
// takes ownership of fd.
func (s *Server) ListenHMPFd(fd int) (*HMPMonitor, error) {
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v == 0 {
		unix.Close(fd)
		if err == nil {
			err = errors.New("not a listening socket")
		}
		return nil, fmt.Errorf("fd %d: %w", fd, err)
	}
	unix.CloseOnExec(fd)
	return s.serveHMPFd(fd)
}

func (s *Server) serveHMPFd(fd int) (*HMPMonitor, error) {
	f := os.NewFile(uintptr(fd), "hmp-listener")
	l, err := net.FileListener(f) // dups fd
	f.Close()
	if err != nil {
		return nil, err
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("fd %d is not a unix socket", fd)
	}
	ul.SetUnlinkOnClose(false)
	m := s.newHMP()
	m.ln = ul
	m.wg.Add(1)
	go m.accept()
	return m, nil
}

// ServeHMP runs one human monitor session on r and w (stdio). echo says
// whether typed lines are to be written back: not when r is a terminal,
// which echoes them itself.
func (s *Server) ServeHMP(r io.Reader, w io.Writer, echo bool) *HMPMonitor {
	m := s.newHMP()
	m.connectedOnce.Do(func() { close(m.connected) })
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.session(r, &lenientWriter{w: w}, echo)
	}()
	return m
}

// Addr names the socket as QEMU's "waiting for connection" line does.
func (m *HMPMonitor) Addr() string {
	if m.ln == nil {
		return "stdio"
	}
	if m.path != "" {
		return "unix:" + m.path + ",server=on"
	}
	return m.ln.Addr().String()
}

// Connected is closed when the first client has connected.
func (m *HMPMonitor) Connected() <-chan struct{} { return m.connected }

func (m *HMPMonitor) accept() {
	defer m.wg.Done()
	for {
		uc, err := m.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(50 * time.Millisecond) // EMFILE and the like
			continue
		}
		m.connectedOnce.Do(func() { close(m.connected) })
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			uc.Close()
			continue
		}
		m.conns[uc] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		go func() {
			defer m.wg.Done()
			m.session(uc, deadlineWriter{uc}, true)
			m.mu.Lock()
			delete(m.conns, uc)
			m.mu.Unlock()
			uc.Close()
		}()
	}
}

// deadlineWriter drops a client that stops reading, as QMP's send does.
type deadlineWriter struct{ uc *net.UnixConn }

func (d deadlineWriter) Write(p []byte) (int, error) {
	d.uc.SetWriteDeadline(time.Now().Add(writeTimeout))
	return d.uc.Write(p)
}

// session is one client: banner, then a prompt before every line.
func (m *HMPMonitor) session(r io.Reader, w io.Writer, echo bool) {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "QEMU %s monitor - type 'help' for more information\r\n(qemu) ", QEMUVersion())
	if bw.Flush() != nil {
		return
	}
	br := bufio.NewReaderSize(r, maxHMPLine)
	for {
		line, err := readLine(br)
		if err != nil {
			return
		}
		if echo {
			bw.WriteString(line + "\r\n")
		}
		out, then := m.srv.runHMP(line)
		bw.WriteString(out)
		if then != nil {
			bw.Flush()
			then()
		}
		select {
		case <-m.srv.vm.ExitRequested():
			bw.Flush() // quit: no prompt, as QEMU exits
			return
		default:
		}
		bw.WriteString("(qemu) ")
		if bw.Flush() != nil {
			return
		}
	}
}

// readLine reads one line without its "\n" or "\r\n"; a line longer than
// maxHMPLine is cut there, the rest discarded, as QEMU's readline does.
func readLine(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		chunk, isPrefix, err := br.ReadLine()
		if err != nil {
			return "", err
		}
		if room := maxHMPLine - b.Len(); room > 0 {
			b.Write(chunk[:min(len(chunk), room)])
		}
		if !isPrefix {
			return b.String(), nil
		}
	}
}

// Close stops the monitor: listener closed, socket file removed, clients
// disconnected. A stdio session's read cannot be interrupted; it ends
// with the process.
func (m *HMPMonitor) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	for c := range m.conns {
		c.Close()
	}
	m.mu.Unlock()
	if m.ln == nil {
		return
	}
	m.ln.Close()
	if m.path != "" {
		os.Remove(m.path)
	}
	m.wg.Wait()
}

// errText words err as the C library does where it is an errno, as QEMU
// prints it.
func errText(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return qemuopen.Strerror(errno)
	}
	return err.Error()
}
