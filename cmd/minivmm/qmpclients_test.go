package main

// Fd passing as real QMP clients do it: QEMU's qemu.qmp (the fd in a
// sendmsg of its own with a lone space, the command in a later write),
// libvirt (the fd with the command's bytes), and raw sockets for every
// framing in between. The fds belong to the connection until a command
// takes one.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
)

// clientImages makes two small files, a and b, for telling fds apart.
func clientImages(t *testing.T) (a, b string) {
	t.Helper()
	dir := t.TempDir()
	a, b = filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, make([]byte, 4096), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// openFd opens path with flags for the test; it is closed at cleanup.
func openFd(t *testing.T, path string, flags int) int {
	t.Helper()
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// fdTarget is what fd n of process pid refers to ("" if it is not open).
func fdTarget(pid int, n int64) string {
	s, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, n))
	return s
}

// waitFdCount waits until the VMM holds want fds.
func waitFdCount(t *testing.T, pid, want int, what string) {
	t.Helper()
	n := 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if n, _ = fdtest.CountOf(pid); n == want {
			return
		}
	}
	t.Fatalf("timed out waiting for %s: %d fds, want %d: %v", what, n, want, childFds(t, pid))
}

// readyFdCount is the fds a started VMM holds once it serves its monitor:
// its socket file exists once bound, and between bind and listen Go's net
// package holds /proc/sys/net/core/somaxconn open (strace shows it), so a
// count taken as soon as the file exists may be one too high.
func readyFdCount(t *testing.T, p *qmptest.Process) int {
	t.Helper()
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	withProbe := fdCount(t, p.Pid)
	c.Close()
	waitFdCount(t, p.Pid, withProbe-1, "the VMM to close a probe connection")
	return withProbe - 1
}

func fdCount(t *testing.T, pid int) int {
	t.Helper()
	n, err := fdtest.CountOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFdFramings: both framings of the fd and its command, and what
// happens to fds no command takes.
func TestFdFramings(t *testing.T) {
	fdtest.Check(t)
	imgA, imgB := clientImages(t)
	a := openFd(t, imgA, unix.O_RDONLY)
	b := openFd(t, imgB, unix.O_RDONLY)
	p := startVMM(t, nil)
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	base := fdCount(t, p.Pid)

	addFd := func(set int) int64 {
		t.Helper()
		r := ret(t, c.Execute("add-fd", map[string]any{"fdset-id": set})).(map[string]any)
		return num(t, r["fd"])
	}
	// qemu.qmp: the fd with a lone space, the command later.
	c.Send(" ", a)
	time.Sleep(20 * time.Millisecond) // two reads, not one
	if fd := addFd(1); fdTarget(p.Pid, fd) != imgA {
		t.Errorf("qemu.qmp framing: add-fd got fd %d -> %q, want %s", fd, fdTarget(p.Pid, fd), imgA)
	}
	// Whitespace, several writes, then the command.
	c.Send("\r\n\t", b)
	c.Send("  ")
	c.Send(`{"execute": "add-fd",`)
	time.Sleep(20 * time.Millisecond)
	c.Send(` "arguments": {"fdset-id": 2}}`)
	r := ret(t, c.Reply()).(map[string]any)
	if fd := num(t, r["fd"]); fdTarget(p.Pid, fd) != imgB {
		t.Errorf("split framing: add-fd got %q, want %s", fdTarget(p.Pid, fd), imgB)
	}
	// libvirt: the fd with the command.
	r = ret(t, c.Execute("add-fd", map[string]any{"fdset-id": 3}, a)).(map[string]any)
	if fd := num(t, r["fd"]); fdTarget(p.Pid, fd) != imgA {
		t.Errorf("libvirt framing: add-fd got %q, want %s", fdTarget(p.Pid, fd), imgA)
	}
	// The fd was taken: the next add-fd has none.
	if got := errDesc(t, c.Execute("add-fd", map[string]any{"fdset-id": 4})); got != "No file descriptor supplied via SCM_RIGHTS" {
		t.Errorf("add-fd with no fd held: %q", got)
	}
	if got := fdCount(t, p.Pid); got != base+3 {
		t.Errorf("VMM holds %d fds, want base %d + 3 added", got, base)
	}

	// An fd with a command that takes none stays with the connection.
	ret(t, c.Execute("query-status", nil, a))
	if got := fdCount(t, p.Pid); got != base+4 {
		t.Errorf("after query-status with an fd: %d fds, want %d (one held)", got, base+4)
	}
	// A newer fd replaces it (the older is closed)...
	c.Send(" ", b)
	ret(t, c.Execute("query-status", nil))
	if got := fdCount(t, p.Pid); got != base+4 {
		t.Errorf("after a second fd: %d fds, want %d (still one held)", got, base+4)
	}
	// ...and the next command that takes an fd takes the newest.
	if fd := addFd(5); fdTarget(p.Pid, fd) != imgB {
		t.Errorf("held fd: add-fd got %q, want the newer fd, %s", fdTarget(p.Pid, fd), imgB)
	}
	// Several fds in one sendmsg: the command takes the first, the rest
	// are closed.
	r = ret(t, c.Execute("add-fd", map[string]any{"fdset-id": 6}, b, a, a)).(map[string]any)
	if fd := num(t, r["fd"]); fdTarget(p.Pid, fd) != imgB {
		t.Errorf("three fds: add-fd got %q, want the first, %s", fdTarget(p.Pid, fd), imgB)
	}
	if got := fdCount(t, p.Pid); got != base+5 {
		t.Errorf("after add-fd with three fds: %d fds, want %d", got, base+5)
	}
	// A client that goes away holding an fd: closed with its other fds.
	c.Send(" ", a)
	c.Send(`{"execute": "add-fd", "arguments": {"fdset-id": 7}`, b) // never finished
	watcher := qmptest.Dial(t, p.Sock)
	watcher.Negotiate()
	c.Close()
	waitFdCount(t, p.Pid, base, "the VMM to close the departed client's fds") // its socket is now the watcher's
	if got := fdsets(t, watcher); len(got) != 0 {
		t.Errorf("sets left after the client went: %v", got)
	}
}

// TestFdPipelinedWithOOB: a client that enabled oob may send commands
// without waiting for replies; each add-fd still gets the fd that was held
// when it was read (QEMU 7.2 gives the second fd to the first command).
func TestFdPipelinedWithOOB(t *testing.T) {
	fdtest.Check(t)
	imgA, imgB := clientImages(t)
	a := openFd(t, imgA, unix.O_RDONLY)
	b := openFd(t, imgB, unix.O_RDONLY)
	p := startVMM(t, nil)
	c := qmptest.Dial(t, p.Sock)
	ret(t, c.Execute("qmp_capabilities", map[string]any{"enable": []string{"oob"}}))
	base := fdCount(t, p.Pid)
	c.Send(`{"execute": "add-fd", "arguments": {"fdset-id": 1}, "id": "a"}`, a)
	c.Send(`{"execute": "add-fd", "arguments": {"fdset-id": 2}, "id": "b"}`, b)
	c.Send(`{"execute": "query-status", "id": "s"}`, a) // held, then replaced...
	c.Send(`{"execute": "add-fd", "arguments": {"fdset-id": 3}, "id": "c"}`, b)
	for _, want := range []struct {
		id, target string
	}{{"a", imgA}, {"b", imgB}, {"s", ""}, {"c", imgB}} {
		r := c.Reply()
		if r["id"] != want.id {
			t.Fatalf("reply %v, want id %s", r, want.id)
		}
		if want.target == "" {
			continue
		}
		fd := num(t, ret(t, r).(map[string]any)["fd"])
		if got := fdTarget(p.Pid, fd); got != want.target {
			t.Errorf("add-fd %s got %q, want %s", want.id, got, want.target)
		}
	}
	if got := fdCount(t, p.Pid); got != base+3 {
		t.Errorf("VMM holds %d fds, want base %d + 3 added (query-status's fd closed when replaced)", got, base)
	}
	ret(t, c.Execute("remove-fd", map[string]any{"fdset-id": 1}))
	ret(t, c.Execute("remove-fd", map[string]any{"fdset-id": 2}))
	ret(t, c.Execute("remove-fd", map[string]any{"fdset-id": 3}))
	if got := fdCount(t, p.Pid); got != base {
		t.Errorf("VMM holds %d fds after remove-fd, want %d", got, base)
	}
}

// qemuQMPPath finds QEMU's qemu.qmp library (fetched by .ci/qemu-python)
// and python3, skipping the test when either is missing, except under
// CI=true, where that fails it.
func qemuQMPPath(t *testing.T) (python, pythonPath string) {
	t.Helper()
	dir := os.Getenv("MINIVMM_QEMU_PYTHON")
	if dir == "" {
		dir = "/var/cache/minivmm/qemu-python"
	}
	python, err := exec.LookPath("python3")
	msg := ""
	switch {
	case err != nil:
		msg = "python3 not installed"
	case !fileExists(filepath.Join(dir, "qemu", "qmp", "qmp_client.py")):
		msg = "qemu.qmp not found in " + dir + " (run .ci/qemu-python, or set MINIVMM_QEMU_PYTHON)"
	}
	if msg != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return python, dir
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestQemuQMPFds passes fds to minivmm with qemu.qmp's send_fd_scm, as
// QEMU's own tests and tools do.
func TestQemuQMPFds(t *testing.T) {
	fdtest.Check(t)
	python, pythonPath := qemuQMPPath(t)
	img, _ := clientImages(t)
	p := startVMM(t, nil)
	base := readyFdCount(t, p)

	script, err := filepath.Abs("testdata/qemu_qmp_fds.py")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, script, p.Sock, img)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+pythonPath)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	t.Cleanup(func() {
		if !done {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	lines := bufio.NewScanner(stdout)
	readJSON := func(v any) {
		t.Helper()
		if !lines.Scan() {
			cmd.Wait()
			done = true
			t.Fatalf("qemu.qmp script ended early: %v\n%s", lines.Err(), stderr.String())
		}
		if err := json.Unmarshal(lines.Bytes(), v); err != nil {
			t.Fatalf("qemu.qmp script printed %q: %v", lines.Text(), err)
		}
	}

	var added struct {
		Added struct {
			Fd      int64 `json:"fd"`
			FdsetID int64 `json:"fdset-id"`
		}
	}
	readJSON(&added)
	if added.Added.FdsetID != 3 {
		t.Errorf("add-fd = %+v", added.Added)
	}
	// The VMM holds the fd qemu.qmp sent, read-only as it was opened.
	if got := fdTarget(p.Pid, added.Added.Fd); got != img {
		t.Errorf("fd %d in the VMM is %q, want %s", added.Added.Fd, got, img)
	} else if fl := fdinfoFlags(t, p.Pid, int(added.Added.Fd)); fl&unix.O_ACCMODE != unix.O_RDONLY {
		t.Errorf("fd %d flags %o, want O_RDONLY", added.Added.Fd, fl)
	}
	if got := fdCount(t, p.Pid); got != base+2 { // the connection and the fd
		t.Errorf("VMM holds %d fds with qemu.qmp connected, want %d", got, base+2)
	}
	stdin.Write([]byte("\n"))

	var out map[string]any
	readJSON(&out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("qemu.qmp script: %v\n%s", err, stderr.String())
	}
	done = true
	want := map[string]any{
		"capabilities":       []any{"oob"},
		"query-fdsets":       []any{map[string]any{"fdset-id": float64(3), "fds": []any{map[string]any{"fd": float64(added.Added.Fd), "opaque": "qemu.qmp"}}}},
		"getfd":              map[string]any{},
		"closefd":            map[string]any{},
		"remove-fd":          map[string]any{},
		"query-fdsets after": []any{},
		"add-fd without fd":  "No file descriptor supplied via SCM_RIGHTS",
		"exec-oob":           "The command query-status does not support OOB",
		"query-status":       map[string]any{"status": "running", "running": true},
	}
	for k, w := range want {
		g, _ := json.Marshal(out[k])
		wj, _ := json.Marshal(w)
		if string(g) != string(wj) {
			t.Errorf("%s: got %s, want %s", k, g, wj)
		}
	}
	waitFdCount(t, p.Pid, base, "the VMM's fds back to the baseline after qemu.qmp left")
}
