package monitor

import (
	"errors"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ServeStdio runs one QMP session on r and w (-qmp stdio). The connection
// code works on sockets (fd passing, half-close, write deadlines), so r
// and w are bridged to one end of a socket pair and the session runs on
// the other, as any client's: a client on stdio can pass no fds, and
// everything else behaves as on a socket. The session ends when r does;
// the process goes on running, as QEMU's does.
func (s *Server) ServeStdio(r io.Reader, w io.Writer, pretty bool) (*Monitor, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ours, err := unixConn(pair[0])
	if err != nil {
		unix.Close(pair[1])
		return nil, err
	}
	theirs, err := unixConn(pair[1])
	if err != nil {
		ours.Close()
		return nil, err
	}
	m := &Monitor{srv: s, pretty: pretty, named: map[string]int{}, listener: newListener()}
	close(m.connected)
	s.mu.Lock()
	if !s.closed {
		s.monitors = append(s.monitors, m)
	}
	s.mu.Unlock()
	c := s.newConn(m, ours)
	if c == nil {
		ours.Close()
		theirs.Close()
		return nil, errors.New("monitor server is shut down")
	}
	go c.serve()
	s.stdio.Add(1)
	go func() {
		// Ends when the session's socket is closed and all it wrote has
		// been copied; Close waits for that (bounded), so that the reply
		// to quit and the SHUTDOWN event reach stdout before exit.
		defer s.stdio.Done()
		io.Copy(&lenientWriter{w: w}, theirs)
		theirs.Close()
	}()
	go func() {
		// A read of stdin cannot be interrupted: this ends at its EOF
		// (the session sees the client hang up) or with the process.
		io.Copy(theirs, r)
		theirs.CloseWrite()
	}()
	return m, nil
}

// unixConn wraps fd, which it takes, as a *net.UnixConn.
func unixConn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "qmp-stdio")
	c, err := net.FileConn(f) // dups fd
	f.Close()
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}

// waitStdio waits, at most d, for the stdio sessions' output to be
// copied out.
func (s *Server) waitStdio(d time.Duration) {
	done := make(chan struct{})
	go func() {
		s.stdio.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// lenientWriter is the stdout of a stdio monitor: once a write fails (the
// reader went away), output is dropped and the session goes on taking
// commands, as QEMU's does; quit still quits. One goroutine uses it.
type lenientWriter struct {
	w      io.Writer
	failed bool
}

func (l *lenientWriter) Write(p []byte) (int, error) {
	if !l.failed {
		if _, err := l.w.Write(p); err != nil {
			l.failed = true
		}
	}
	return len(p), nil
}
