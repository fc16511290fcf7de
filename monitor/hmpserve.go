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
	listener
	srv *Server

	mu     sync.Mutex
	conns  map[io.Closer]struct{}
	closed bool
	wg     sync.WaitGroup
}

// maxHMPLine bounds a command line; QEMU's readline stops at 4 KiB.
const maxHMPLine = 4096

func (s *Server) newHMP() *HMPMonitor {
	return &HMPMonitor{listener: newListener(), srv: s, conns: map[io.Closer]struct{}{}}
}

// ListenHMP serves a human monitor on a new unix socket at path (mode
// 0600; a stale socket is replaced, as Listen does).
func (s *Server) ListenHMP(path string) (*HMPMonitor, error) {
	fd, err := bindUnix(path)
	if err != nil {
		return nil, err
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
	if err := adoptListeningFd(fd); err != nil {
		return nil, err
	}
	return s.serveHMPFd(fd)
}

func (s *Server) serveHMPFd(fd int) (*HMPMonitor, error) {
	ul, err := unixListener(fd)
	if err != nil {
		return nil, err
	}
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
	m.markConnected()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.session(r, &lenientWriter{w: w}, echo)
	}()
	return m
}

func (m *HMPMonitor) accept() {
	defer m.wg.Done()
	m.acceptLoop(func(uc *net.UnixConn) {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			uc.Close()
			return
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
	})
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
