package monitor

import (
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
)

func pipeFds(t *testing.T, n int) []int {
	t.Helper()
	var fds []int
	for len(fds) < n {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		fds = append(fds, p[:]...)
	}
	closeFds(fds[n:])
	return fds[:n]
}

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// TestHeldFds: a batch is closed when its last holder lets go, unless a
// command took its first fd (then the rest are closed at once).
func TestHeldFds(t *testing.T) {
	fdtest.Check(t)

	// Replaced while a queued request still refers to it: the request
	// can take it; the rest is closed when it is done.
	fds := pipeFds(t, 3)
	conn := newHeldFds(fds)
	req := conn.acquire()
	conn.release() // a newer batch came
	if !isOpen(fds[0]) {
		t.Fatal("batch closed while a request still refers to it")
	}
	fd := req.take()
	if fd != fds[0] || isOpen(fds[1]) || isOpen(fds[2]) {
		t.Fatalf("take = %d (want %d); others open: %v %v", fd, fds[0], isOpen(fds[1]), isOpen(fds[2]))
	}
	if again := req.take(); again != -1 {
		t.Errorf("second take = %d, want -1", again)
	}
	req.release()
	if !isOpen(fd) {
		t.Error("the taken fd was closed by release")
	}
	unix.Close(fd)

	// Nobody takes it: closed with the last reference.
	fds = pipeFds(t, 2)
	conn = newHeldFds(fds)
	req = conn.acquire()
	req.release()
	if !isOpen(fds[0]) {
		t.Fatal("closed while the connection still holds it")
	}
	conn.release()
	if isOpen(fds[0]) || isOpen(fds[1]) {
		t.Error("not closed after the last release")
	}

	// No batch at all.
	var none *heldFds
	if none.acquire() != nil || none.take() != -1 {
		t.Error("nil batch")
	}
	none.release()
}
