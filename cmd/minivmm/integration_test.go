package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/internal/qmptest"
)

// imageFile makes a small file and opens it in each of modes.
func imageFile(t *testing.T, modes ...int) (string, []*os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, openFiles(t, path, modes...)
}

// childFds lists the fds process pid holds, with what each refers to.
func childFds(t *testing.T, pid int) map[int]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	fds := map[int]string{}
	for _, e := range entries {
		n, _ := strconv.Atoi(e.Name())
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		fds[n] = target
	}
	return fds
}

// fdinfoFlags reads the flags line of /proc/PID/fdinfo/FD.
func fdinfoFlags(t *testing.T, pid, fd int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			return int(n)
		}
	}
	t.Fatalf("no flags in fdinfo of %d/%d", pid, fd)
	return 0
}

func num(t *testing.T, v any) int64 {
	t.Helper()
	n, err := v.(json.Number).Int64()
	if err != nil {
		t.Fatalf("%v is not an integer", v)
	}
	return n
}

// ret returns a reply's "return", failing the test on an error reply.
func ret(t *testing.T, reply map[string]any) any {
	t.Helper()
	r, ok := reply["return"]
	if !ok {
		t.Fatalf("command failed: %v", reply)
	}
	return r
}

// errDesc returns an error reply's desc, failing the test on success.
func errDesc(t *testing.T, reply map[string]any) string {
	t.Helper()
	e, ok := reply["error"].(map[string]any)
	if !ok {
		t.Fatalf("expected an error, got %v", reply)
	}
	return e["desc"].(string)
}

// fdsets returns query-fdsets as set id -> the fds listed in it.
func fdsets(t *testing.T, c *qmptest.Client) map[int64][]int64 {
	t.Helper()
	out := map[int64][]int64{}
	for _, s := range ret(t, c.Execute("query-fdsets", nil)).([]any) {
		set := s.(map[string]any)
		var fds []int64
		for _, f := range set["fds"].([]any) {
			fds = append(fds, num(t, f.(map[string]any)["fd"]))
		}
		out[num(t, set["fdset-id"])] = fds
	}
	return out
}

// waitFor polls cond for up to 5 s: the VMM handles a disconnect on its own
// schedule.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestCommandLineAddFd(t *testing.T) {
	t.Parallel()
	path, files := imageFile(t, os.O_RDONLY, os.O_RDWR)
	p := startVMM(t, files, "-add-fd", "fd=3,set=2,opaque=rdonly:"+path, "-add-fd", "fd=4,set=2,opaque=rdwr:"+path)
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	sets := ret(t, c.Execute("query-fdsets", nil)).([]any)
	if len(sets) != 1 {
		t.Fatalf("query-fdsets = %v", sets)
	}
	fds := sets[0].(map[string]any)["fds"].([]any)
	held := childFds(t, p.Pid)
	for i, want := range []struct {
		opaque string
		mode   int
	}{{"rdonly:" + path, unix.O_RDONLY}, {"rdwr:" + path, unix.O_RDWR}} {
		f := fds[i].(map[string]any)
		fd := int(num(t, f["fd"]))
		if f["opaque"] != want.opaque || fd == 3 || fd == 4 || held[fd] != path {
			t.Errorf("fd %d: %v (child holds %q)", i, f, held[fd])
		}
		if fl := fdinfoFlags(t, p.Pid, fd); fl&unix.O_ACCMODE != want.mode || fl&unix.O_CLOEXEC == 0 {
			t.Errorf("dup %d has flags %o", fd, fl)
		}
	}
	// The inherited originals were closed once the options were parsed.
	for _, fd := range []int{3, 4} {
		if held[fd] == path {
			t.Errorf("original fd %d still open in the VMM", fd)
		}
	}
	c.Close()
	// A departing client never takes command-line fds with it.
	c2 := qmptest.Dial(t, p.Sock)
	c2.Negotiate()
	if got := fdsets(t, c2); len(got[2]) != 2 {
		t.Fatalf("command-line set after a client left: %v", got)
	}
}

func TestAddFdOptionErrors(t *testing.T) {
	t.Parallel()
	_, files := imageFile(t, os.O_RDONLY)
	tests := []struct {
		arg, want string
	}{
		{"set=2", "minivmm: -add-fd set=2: fd option is required and must be non-negative"},
		{"fd=1,set=2", "minivmm: -add-fd fd=1,set=2: fd cannot be a standard I/O stream"},
		{"fd=9,set=2", "minivmm: -add-fd fd=9,set=2: fd is not valid or already in use"},
		{"fd=3", "minivmm: -add-fd fd=3: set option is required and must be non-negative"},
		{"fd=3,set=2,bogus=1", "minivmm: -add-fd fd=3,set=2,bogus=1: Invalid parameter 'bogus'"},
	}
	for _, tc := range tests {
		p := qmptest.StartArgs(t, binary, files, "-add-fd", tc.arg, "-qmp", "unix:"+filepath.Join(t.TempDir(), "s"))
		if code := p.Wait(10 * time.Second); code != 1 || strings.TrimSpace(p.Output()) != tc.want {
			t.Errorf("-add-fd %s: exit %d, output %q; want 1, %q", tc.arg, code, p.Output(), tc.want)
		}
	}
}

func TestQMPAddFdAndLeaks(t *testing.T) {
	t.Parallel()
	_, files := imageFile(t, os.O_RDONLY, os.O_RDWR, os.O_RDONLY)
	p := startVMM(t, nil)
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	base := len(childFds(t, p.Pid))

	r := ret(t, c.Execute("add-fd", map[string]any{"fdset-id": 5, "opaque": "hotplug"}, int(files[0].Fd()))).(map[string]any)
	fd := num(t, r["fd"])
	if num(t, r["fdset-id"]) != 5 {
		t.Fatalf("add-fd = %v", r)
	}
	if fl := fdinfoFlags(t, p.Pid, int(fd)); fl&unix.O_CLOEXEC == 0 {
		t.Error("received fd lacks FD_CLOEXEC")
	}
	// Three fds in one message: one is taken, two closed.
	ret(t, c.Execute("add-fd", map[string]any{"fdset-id": 5}, int(files[1].Fd()), int(files[2].Fd()), int(files[0].Fd())))
	// Fds sent with commands that take none stay with the connection, as
	// in QEMU, until a newer fd replaces them; add-fd that takes its fd
	// and then fails closes it.
	ret(t, c.Execute("query-status", nil, int(files[0].Fd())))
	errDesc(t, c.Execute("add-fd", map[string]any{"fdset-id": -1}, int(files[0].Fd())))
	errDesc(t, c.Execute("add-fd", map[string]any{"bogus": 1}, int(files[0].Fd())))
	errDesc(t, c.Execute("nosuch", nil, int(files[0].Fd())))
	if got := childFds(t, p.Pid); len(got) != base+3 {
		t.Errorf("VMM holds %d fds, want %d (base %d + 2 added + 1 held): %v", len(got), base+3, base, got)
	}
	// getfd keeps one fd per name; closefd and a second getfd release it.
	ret(t, c.Execute("getfd", map[string]any{"fdname": "mig"}, int(files[0].Fd())))
	ret(t, c.Execute("getfd", map[string]any{"fdname": "mig"}, int(files[1].Fd())))
	if got := errDesc(t, c.Execute("getfd", map[string]any{"fdname": "1x"}, int(files[0].Fd()))); got != "Parameter 'fdname' expects a name not starting with a digit" {
		t.Errorf("getfd digit name: %q", got)
	}
	ret(t, c.Execute("closefd", map[string]any{"fdname": "mig"}))
	ret(t, c.Execute("remove-fd", map[string]any{"fdset-id": 5}))
	if got := len(childFds(t, p.Pid)); got != base {
		t.Errorf("VMM holds %d fds after remove-fd, want %d", got, base)
	}
	if got := fdsets(t, c); len(got) != 0 {
		t.Errorf("sets left: %v", got)
	}
}

func TestDisconnectClosingRules(t *testing.T) {
	t.Parallel()
	_, files := imageFile(t, os.O_RDONLY, os.O_RDWR)
	for _, autoclose := range []string{"on", "off"} {
		t.Run("autoclose-"+autoclose, func(t *testing.T) {
			p := startVMM(t, files[:1], "-add-fd", "fd=3,set=2", "-fdset-autoclose", autoclose)
			watcher := qmptest.Dial(t, p.Sock)
			watcher.Negotiate()
			base := len(childFds(t, p.Pid))
			c := qmptest.Dial(t, p.Sock)
			c.Negotiate()
			ret(t, c.Execute("add-fd", map[string]any{"fdset-id": 5}, int(files[0].Fd())))
			ret(t, c.Execute("add-fd", map[string]any{"fdset-id": 6}, int(files[1].Fd())))
			// Set 5 of another client must survive c's departure.
			ret(t, watcher.Execute("add-fd", map[string]any{"fdset-id": 5}, int(files[1].Fd())))
			c.Close()
			want := map[int64]int{2: 1, 5: 1}
			if autoclose == "off" {
				want = map[int64]int{2: 1, 5: 2, 6: 1}
			}
			waitFor(t, "the closing rules after a disconnect", func() bool {
				got := fdsets(t, watcher)
				if len(got) != len(want) {
					return false
				}
				for id, n := range want {
					if len(got[id]) != n {
						return false
					}
				}
				return true
			})
			extra := 1
			if autoclose == "off" {
				extra = 3
			}
			// The VMM closes the departed client's socket on its own schedule.
			waitFor(t, fmt.Sprintf("the VMM to hold %d fds", base+extra), func() bool {
				return len(childFds(t, p.Pid)) == base+extra
			})
		})
	}
}

func TestRemoveFdWhilePaused(t *testing.T) {
	t.Parallel()
	_, files := imageFile(t, os.O_RDONLY)
	p := startVMM(t, nil, "-S")
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	base := len(childFds(t, p.Pid))
	r := ret(t, c.Execute("add-fd", nil, int(files[0].Fd()))).(map[string]any)
	ret(t, c.Execute("remove-fd", map[string]any{"fdset-id": r["fdset-id"], "fd": r["fd"]}))
	if got := len(childFds(t, p.Pid)); got != base {
		t.Errorf("paused VMM holds %d fds after remove-fd, want %d (QEMU <= 9.0 keeps it)", got, base)
	}
	if got := fdsets(t, c); len(got) != 0 {
		t.Errorf("set still listed: %v", got)
	}
}

// TestLibvirtStyleChardev passes the monitor's listening socket as an fd.
func TestLibvirtStyleChardev(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "mon.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	lf, err := ul.File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	p := qmptest.StartArgs(t, binary, []*os.File{lf}, "-machine", "none", "-nodefaults", "-display", "none",
		"-chardev", "socket,id=charmonitor,fd=3,server=on,wait=off",
		"-mon", "chardev=charmonitor,id=monitor,mode=control")
	c := qmptest.Dial(t, sock)
	c.Negotiate()
	ret(t, c.Execute("query-status", nil))
	ret(t, c.Execute("quit", nil))
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, p.Output())
	}
}

func TestQuitSignalAndCleanup(t *testing.T) {
	t.Parallel()
	pidfile := filepath.Join(t.TempDir(), "pid")
	p := startVMM(t, nil, "-pidfile", pidfile, "-name", "guest=vm1,debug-threads=on")
	if data, err := os.ReadFile(pidfile); err != nil || strings.TrimSpace(string(data)) != strconv.Itoa(p.Pid) {
		t.Fatalf("pidfile: %q, %v", data, err)
	}
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	other := qmptest.Dial(t, p.Sock)
	other.Negotiate()
	ret(t, c.Execute("quit", map[string]any{}))
	ev := other.Event("SHUTDOWN", 5*time.Second)
	if data := ev["data"].(map[string]any); data["reason"] != "host-qmp-quit" || data["guest"] != false {
		t.Errorf("SHUTDOWN = %v", ev)
	}
	c.WaitClosed(5 * time.Second)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, f := range []string{p.Sock, pidfile} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s left behind", f)
		}
	}

	p = startVMM(t, nil)
	c = qmptest.Dial(t, p.Sock)
	c.Negotiate()
	p.Signal(syscall.SIGTERM)
	if data := c.Event("SHUTDOWN", 5*time.Second)["data"].(map[string]any); data["reason"] != "host-signal" {
		t.Errorf("SHUTDOWN on SIGTERM: %v", data)
	}
	if code := p.Wait(10 * time.Second); code != 0 || !strings.Contains(p.Output(), "terminating on signal 15") {
		t.Fatalf("exit %d, output %q", code, p.Output())
	}
}

func TestDefaultSocket(t *testing.T) {
	t.Parallel()
	p := qmptest.StartArgs(t, binary, nil)
	var sock string
	waitFor(t, "the socket line", func() bool {
		for _, line := range strings.Split(p.Output(), "\n") {
			if s, ok := strings.CutPrefix(line, "minivmm: QMP monitor listening on "); ok {
				sock = s
				return true
			}
		}
		return false
	})
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: %v %v", sock, st, err)
	}
	c := qmptest.Dial(t, sock)
	c.Negotiate()
	ret(t, c.Execute("quit", nil))
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("default socket %s left behind", sock)
	}
}

// TestHostileInput sends what a broken or hostile client might; the VMM
// answers with errors, keeps serving, and holds no extra fds afterwards.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	_, files := imageFile(t, os.O_RDONLY)
	p := startVMM(t, nil)
	good := qmptest.Dial(t, p.Sock)
	good.Negotiate()
	base := len(childFds(t, p.Pid))

	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	for _, in := range []string{`{"execute": }`, `abc`, `}`, "\x01", `{"execute":"query-status","execute":"stop"}`} {
		c.Send(in + "\n")
		errDesc(t, c.Reply())
	}
	// Far too deep, then far too large: one error each, memory bounded.
	c.Send(strings.Repeat("[", 5000) + strings.Repeat("]", 5000))
	if got := errDesc(t, c.Reply()); got != "JSON nesting depth limit exceeded" {
		t.Errorf("deep: %q", got)
	}
	big := `{"execute":"query-status","id":"` + strings.Repeat("a", 5<<20) + `"}`
	c.Send(big)
	if got := errDesc(t, c.Reply()); got != "JSON token size limit exceeded" {
		t.Errorf("large: %q", got)
	}
	ret(t, c.Execute("query-status", nil))
	// Binary garbage with an fd, then a disconnect mid-message holding one.
	c.Send("\xfe\xfd\x00garbage", int(files[0].Fd()))
	c.Send(`{"execute":"add-fd","arguments":{"fdset-id":`, int(files[0].Fd()))
	c.Close()
	waitFor(t, "the VMM to drop the client's fds", func() bool { return len(childFds(t, p.Pid)) == base })
	ret(t, good.Execute("query-status", nil))
	if got := fdsets(t, good); len(got) != 0 {
		t.Errorf("sets: %v", got)
	}
}

// TestFdSplitAcrossWrites: an fd sent with the first part of a command
// belongs to that command.
func TestFdSplitAcrossWrites(t *testing.T) {
	t.Parallel()
	_, files := imageFile(t, os.O_RDONLY)
	p := startVMM(t, nil)
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	c.Send(`{"execute":"add-fd",`, int(files[0].Fd()))
	time.Sleep(50 * time.Millisecond)
	c.Send(`"arguments":{"fdset-id":3}}`)
	if r := ret(t, c.Reply()).(map[string]any); num(t, r["fdset-id"]) != 3 {
		t.Fatalf("add-fd = %v", r)
	}
	// Two commands in one write with one fd: the fd is the last one's.
	c.Send(`{"execute":"query-status"}{"execute":"add-fd","arguments":{"fdset-id":4}}`, int(files[0].Fd()))
	ret(t, c.Reply())
	ret(t, c.Reply())
	if got := fdsets(t, c); len(got[3]) != 1 || len(got[4]) != 1 {
		t.Fatalf("sets: %v", got)
	}
}

func TestFdsetOnlyOption(t *testing.T) {
	t.Parallel()
	// The option is accepted; what it confines (block-layer opens) arrives
	// with the block layer; here it must not stop the monitor from working.
	p := startVMM(t, nil, "-fdset-only")
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	ret(t, c.Execute("query-status", nil))
}

func TestBadOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-bogus"}, "minivmm: -bogus: invalid option"},
		{[]string{"-add-fd"}, "minivmm: -add-fd: requires an argument"},
		{[]string{"-mon", "chardev=nope,mode=control"}, `minivmm: -mon chardev=nope,mode=control: chardev "nope" not found`},
		{[]string{"-qmp", "unix:/nonexistent/dir/s,server=on,wait=off"}, "minivmm: -qmp unix:/nonexistent/dir/s,server=on,wait=off: Failed to bind socket to /nonexistent/dir/s"},
		{[]string{"-machine", "pc"}, "minivmm: -machine pc:"},
		{[]string{"-fdset-autoclose", "maybe"}, "minivmm: -fdset-autoclose maybe:"},
	} {
		p := qmptest.StartArgs(t, binary, nil, tc.args...)
		if code := p.Wait(10 * time.Second); code != 1 || !strings.HasPrefix(p.Output(), tc.want) {
			t.Errorf("%v: exit %d, output %q; want 1, %q...", tc.args, code, p.Output(), tc.want)
		}
	}
}
