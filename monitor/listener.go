package monitor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// listener is what QMP and human monitors share: the listening socket
// (none for stdio), and the first client's arrival, which -qmp/-monitor
// ...,wait=on waits for.
type listener struct {
	ln   *net.UnixListener // nil for stdio
	path string            // removed on close; empty unless we bound it

	connected     chan struct{} // closed when the first client connects
	connectedOnce sync.Once
}

func newListener() listener { return listener{connected: make(chan struct{})} }

// Addr names the socket, as QEMU does in its "waiting for connection" line.
func (l *listener) Addr() string {
	if l.ln == nil {
		return "stdio"
	}
	if l.path != "" {
		return "unix:" + l.path + ",server=on"
	}
	return l.ln.Addr().String()
}

// Connected is closed when the first client has connected.
func (l *listener) Connected() <-chan struct{} { return l.connected }

func (l *listener) markConnected() { l.connectedOnce.Do(func() { close(l.connected) }) }

// acceptLoop hands every new connection to serve until the listener is
// closed.
func (l *listener) acceptLoop(serve func(*net.UnixConn)) {
	for {
		uc, err := l.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: back off rather than spin.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		l.markConnected()
		serve(uc)
	}
}

// bindUnix creates a listening unix socket at path, mode 0600, with the
// system's largest backlog, and returns its fd. A stale socket file left
// by a dead process is replaced; any other file at path is an error.
// Errors are worded as QEMU words them.
func bindUnix(path string) (int, error) {
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return -1, fmt.Errorf("Failed to bind socket to %s: file exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return -1, fmt.Errorf("Failed to bind socket to %s: Address already in use", path)
		}
		os.Remove(path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("Failed to create socket: %s", errText(err))
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("Failed to bind socket to %s: %s", path, errText(err))
	}
	// chmod before listen: until listen, nobody can connect, so there is
	// no window in which the socket is open to others.
	if err := os.Chmod(path, 0o600); err == nil {
		err = unix.Listen(fd, listenBacklog())
	}
	if err != nil {
		unix.Close(fd)
		os.Remove(path)
		return -1, fmt.Errorf("Failed to listen on %s: %s", path, errText(err))
	}
	return fd, nil
}

// adoptListeningFd checks that an inherited fd is a listening socket
// (libvirt's -chardev socket,fd=N,server=on) and marks it close-on-exec.
// It closes fd when it is not.
func adoptListeningFd(fd int) error {
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v == 0 {
		unix.Close(fd)
		if err == nil {
			err = errors.New("not a listening socket")
		}
		return fmt.Errorf("fd %d: %w", fd, err)
	}
	unix.CloseOnExec(fd)
	return nil
}

// unixListener wraps a listening fd, taking ownership of it.
func unixListener(fd int) (*net.UnixListener, error) {
	f := os.NewFile(uintptr(fd), "monitor-listener")
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
	// The monitor removes the file itself, after the last connection.
	ul.SetUnlinkOnClose(false)
	return ul, nil
}
