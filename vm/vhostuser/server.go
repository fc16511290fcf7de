package vhostuser

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"minivmm/qemuopen"
)

// Server listens on a unix socket and serves one front end at a time, as
// qemu-storage-daemon does: a front end that disconnects (or dies) can
// connect again, and the next one waits in the listen backlog meanwhile.
type Server struct {
	ln  *net.UnixListener
	dev Device
	// logf reports why a session ended abnormally (a protocol error).
	logf func(format string, args ...any)

	mu     sync.Mutex
	conn   *net.UnixConn // the front end being served, or nil
	closed bool
	done   chan struct{} // closed when the accept loop has returned
}

// Listen creates the socket at path, replacing a stale one as QEMU does,
// and starts serving dev. logf, if not nil, is told why sessions ended
// on an error.
func Listen(path string, dev Device, logf func(format string, args ...any)) (*Server, error) {
	// QEMU unlinks whatever is at path; only a socket is taken away
	// here, so that a typo cannot delete an image.
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, &net.OpError{Op: "listen", Net: "unix", Err: syscall.EADDRINUSE}
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	s := &Server{ln: ln, dev: dev, logf: logf, done: make(chan struct{})}
	go s.accept()
	return s, nil
}

func (s *Server) accept() {
	defer close(s.done)
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conn = c
		s.mu.Unlock()
		if err := newSession(c, s.dev).serve(); err != nil {
			s.logf("vhost-user front end disconnected: %v", err)
		}
		s.mu.Lock()
		s.conn = nil
		s.mu.Unlock()
		c.Close()
	}
}

// Connected tells whether a front end is being served.
func (s *Server) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != nil
}

// Close stops listening, disconnects the front end and returns once its
// requests in flight have completed and everything it sent is closed.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	if s.conn != nil {
		s.conn.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	<-s.done
	return err
}

// errnoText is the C library's text for the errno beneath err, as QEMU's
// error_setg_errno words it ("No such file or directory").
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return qemuopen.Strerror(errno)
	}
	return err.Error()
}
