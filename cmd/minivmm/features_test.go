package main

// Tests of the binary as a person or a service manager runs it: help,
// version, pidfile, -msg, -D, -monitor stdio, -daemonize. Where QEMU has
// the case, its text is compared with qemu-system-x86_64's.

import (
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
	"minivmm/monitor"
)

// runBinary runs minivmm with args and stdin to its end.
func runBinary(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not exit: %s %s", args, o.String(), e.String())
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

func TestHelpNamesEveryOption(t *testing.T) {
	fdtest.Check(t)
	var first string
	for _, flag := range []string{"-h", "-help", "--help"} {
		out, errOut, code := runBinary(t, "", flag)
		if code != 0 || errOut != "" {
			t.Fatalf("%s: exit %d, stderr %q", flag, code, errOut)
		}
		if first == "" {
			first = out
		} else if out != first {
			t.Errorf("%s prints a different help", flag)
		}
	}
	for _, want := range []string{"usage: minivmm [options]", "minivmm img ", "minivmm io ", "QEMU " + monitor.QEMUVersion(), "XDG_RUNTIME_DIR"} {
		if !strings.Contains(first, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	newOptions().set.PFlags().VisitAll(func(f *pflag.Flag) {
		if !regexp.MustCompile(`(?m)^-`+regexp.QuoteMeta(f.Name)+`( |$)`).MatchString(first) && f.Name != "help" {
			t.Errorf("help does not list -%s", f.Name)
		}
	})
}

func TestVersion(t *testing.T) {
	for _, flag := range []string{"-version", "--version"} {
		out, _, code := runBinary(t, "", flag)
		if code != 0 || !strings.Contains(out, monitor.Package()) || !strings.Contains(out, "QEMU "+monitor.QEMUVersion()) {
			t.Errorf("%s: exit %d, %q", flag, code, out)
		}
	}
}

// qemuStderr runs qemu-system-x86_64 -machine none with args and returns
// its error text without the program name, or skips without QEMU.
func qemuStderr(t *testing.T, args ...string) string {
	t.Helper()
	needQEMU(t)
	cmd := exec.Command(qmptest.QEMUBinary, append([]string{"-machine", "none", "-nodefaults", "-display", "none"}, args...)...)
	var e bytes.Buffer
	cmd.Stderr = &e
	cmd.Run()
	return strings.ReplaceAll(e.String(), "qemu-system-x86_64: ", "")
}

// needQEMU skips without qemu-system-x86_64, or fails under CI=true.
func needQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(qmptest.QEMUBinary); err != nil {
		msg := qmptest.QEMUBinary + " not installed; apt-get install qemu-system-x86"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

func TestPidfileErrorsAsQEMU(t *testing.T) {
	fdtest.Check(t)
	dir := t.TempDir()
	sock := "unix:" + filepath.Join(dir, "q.sock") + ",server=on,wait=off"
	missing := "/nonexistent/dir/x.pid"
	_, errOut, code := runBinary(t, "", "-pidfile", missing, "-qmp", sock)
	want := "cannot create PID file: Could not create '/nonexistent/dir/x.pid': No such file or directory\n"
	if code != 1 || errOut != "minivmm: "+want {
		t.Errorf("missing dir: exit %d, %q", code, errOut)
	}
	if q := qemuStderr(t, "-pidfile", missing); q != want {
		t.Errorf("QEMU says %q, want %q", q, want)
	}

	// A pidfile held by a running VMM is locked: a second one refuses it.
	pid := filepath.Join(dir, "vm.pid")
	p := startVMM(t, nil, "-pidfile", pid)
	b, err := os.ReadFile(pid)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(p.Pid) {
		t.Fatalf("pidfile %q %v, pid %d", b, err, p.Pid)
	}
	if st, _ := os.Stat(pid); st.Mode().Perm() != 0o600 {
		t.Errorf("pidfile mode %v, QEMU's is 0600", st.Mode())
	}
	_, errOut, code = runBinary(t, "", "-pidfile", pid, "-qmp", "unix:"+filepath.Join(dir, "q2.sock")+",server=on,wait=off")
	want = "cannot create PID file: Cannot lock pid file: Resource temporarily unavailable\n"
	if code != 1 || errOut != "minivmm: "+want {
		t.Errorf("locked: exit %d, %q", code, errOut)
	}
	if q := qemuStderr(t, "-pidfile", pid); q != want {
		t.Errorf("QEMU says %q, want %q", q, want)
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
	if _, err := os.Stat(pid); !os.IsNotExist(err) {
		t.Errorf("pidfile left behind: %v", err)
	}
}

func TestMsgAndLogfile(t *testing.T) {
	fdtest.Check(t)
	dir := t.TempDir()
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z minivmm: -machine pc: `)
	_, errOut, code := runBinary(t, "", "-msg", "timestamp=on", "-machine", "pc")
	if code != 1 || !stamp.MatchString(errOut) {
		t.Errorf("-msg timestamp=on: exit %d, %q", code, errOut)
	}
	_, errOut, _ = runBinary(t, "", "-msg", "guest-name=on", "-name", "vm1", "-machine", "pc")
	if !strings.HasPrefix(errOut, "vm1 minivmm: -machine pc: ") {
		t.Errorf("-msg guest-name=on: %q", errOut)
	}
	for _, tc := range []struct{ args []string }{
		{[]string{"-msg", "timestamp=maybe"}},
		{[]string{"-D", "/nonexistent/dir/log"}},
	} {
		_, errOut, code := runBinary(t, "", tc.args...)
		q := qemuStderr(t, tc.args...)
		if code != 1 || strings.TrimPrefix(errOut, "minivmm: ") != q {
			t.Errorf("%v: exit %d, %q; QEMU says %q", tc.args, code, errOut, q)
		}
	}

	// With -D, what minivmm says once started goes to the log.
	log := filepath.Join(dir, "log")
	p := startVMM(t, nil, "-D", log)
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	b, _ := os.ReadFile(log)
	if !strings.Contains(string(b), "minivmm: terminating on signal 15") || strings.Contains(p.Output(), "terminating") {
		t.Errorf("log %q, stderr %q", b, p.Output())
	}
}

// TestMonitorStdio: a person types HMP commands on stdin.
func TestMonitorStdio(t *testing.T) {
	fdtest.Check(t)
	out, errOut, code := runBinary(t, "info status\nstop\ninfo status\nquit\n", "-monitor", "stdio", "-name", "vm1")
	want := "QEMU " + monitor.QEMUVersion() + " monitor - type 'help' for more information\r\n" +
		"(qemu) info status\r\nVM status: running\r\n" +
		"(qemu) stop\r\n" +
		"(qemu) info status\r\nVM status: paused\r\n" +
		"(qemu) quit\r\n"
	if code != 0 || out != want || errOut != "" {
		t.Errorf("exit %d\nstdout %q\nwant   %q\nstderr %q", code, out, want, errOut)
	}
	_, errOut, code = runBinary(t, "", "-monitor", "stdio", "-chardev", "stdio,id=c", "-mon", "c")
	if code != 1 || errOut != "minivmm: -mon c: cannot use stdio by multiple character devices\n" {
		t.Errorf("two stdio monitors: exit %d, %q", code, errOut)
	}
}

// TestQMPStdio: -qmp stdio is a QMP session on stdin and stdout, as in
// QEMU; quit's reply and the SHUTDOWN event are out before the exit.
func TestQMPStdio(t *testing.T) {
	fdtest.Check(t)
	out, errOut, code := runBinary(t, `{"execute": "qmp_capabilities"}`+"\n"+`{"execute": "query-name"}`+"\n"+`{"execute": "quit"}`+"\n", "-qmp", "stdio", "-name", "vm1")
	stamp := regexp.MustCompile(`"seconds": \d+, "microseconds": \d+`)
	out = stamp.ReplaceAllString(out, `"seconds": S, "microseconds": U`)
	greeting, out, _ := strings.Cut(out, "\r\n")
	if !strings.HasPrefix(greeting, `{"QMP": {"version": {"qemu": {`) || !strings.HasSuffix(greeting, `"capabilities": ["oob"]}}`) {
		t.Errorf("greeting %q", greeting)
	}
	want := `{"return": {}}` + "\r\n" +
		`{"return": {"name": "vm1"}}` + "\r\n" +
		`{"timestamp": {"seconds": S, "microseconds": U}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}` + "\r\n" +
		`{"return": {}}` + "\r\n"
	if code != 0 || out != want || errOut != "" {
		t.Errorf("exit %d\nstdout %q\nwant   %q\nstderr %q", code, out, want, errOut)
	}
	// On a stdio chardev with pretty=on, byte for byte as QEMU (past the
	// greeting, which names each one's version; timestamps masked).
	script := `{"execute": "qmp_capabilities"}` + "\n" + `{"execute": "nosuch", "id": [1, {}]}` + "\n" +
		`{"execute": "query-fdsets"}` + "\n" + `{"execute": "quit"}` + "\n"
	args := []string{"-chardev", "stdio,id=c", "-mon", "c,mode=control,pretty=on"}
	out, errOut, code = runBinary(t, script, args...)
	needQEMU(t)
	qemu := exec.Command(qmptest.QEMUBinary, append([]string{"-machine", "none", "-nodefaults", "-display", "none"}, args...)...)
	qemu.Stdin = strings.NewReader(script)
	qout, err := qemu.Output()
	if err != nil {
		t.Fatalf("qemu: %v", err)
	}
	pastGreeting := func(s string) string {
		_, rest, _ := strings.Cut(s, "\r\n}\r\n")
		return stamp.ReplaceAllString(rest, "T")
	}
	stamp = regexp.MustCompile(`"seconds": \d+,\r\n *"microseconds": \d+`)
	if code != 0 || pastGreeting(out) != pastGreeting(string(qout)) || errOut != "" {
		t.Errorf("-mon mode=control,pretty=on on stdio: exit %d\nstdout %q\nqemu   %q\nstderr %q", code, pastGreeting(out), pastGreeting(string(qout)), errOut)
	}
}

// TestStdioReaderGone: a stdio monitor whose stdout reader has gone (a
// pipe into head) still takes commands, and quit exits 0, as in QEMU;
// Go's default would kill the process with SIGPIPE at the first write.
func TestStdioReaderGone(t *testing.T) {
	fdtest.Check(t)
	needQEMU(t)
	for _, tc := range []struct {
		args []string
		in   string
	}{
		{[]string{"-monitor", "stdio"}, "info status\nquit\n"},
		{[]string{"-qmp", "stdio"}, `{"execute": "qmp_capabilities"}` + "\n" + `{"execute": "quit"}` + "\n"},
	} {
		for _, bin := range []string{qmptest.QEMUBinary, binary} {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			r.Close()
			inR, inW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, append([]string{"-machine", "none", "-nodefaults", "-display", "none"}, tc.args...)...)
			cmd.Stdin, cmd.Stdout = inR, w
			err = cmd.Start()
			inR.Close()
			w.Close()
			if err != nil {
				inW.Close()
				t.Fatal(err)
			}
			// The greeting or banner fails to go out first; then the
			// commands come.
			time.Sleep(200 * time.Millisecond)
			io.WriteString(inW, tc.in)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				err = <-done
				t.Errorf("%s %v: did not quit", bin, tc.args)
			}
			inW.Close()
			if code := cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("%s %v: %v (exit %d)", bin, tc.args, err, code)
			}
		}
	}
}

// TestMonitorOnNamedChardev: -monitor chardev:ID and -qmp chardev:ID use a
// -chardev given anywhere on the command line; misuse is refused in
// QEMU's words.
func TestMonitorOnNamedChardev(t *testing.T) {
	fdtest.Check(t)
	dir := t.TempDir()
	hmpSock, qmpSock := filepath.Join(dir, "h.sock"), filepath.Join(dir, "q.sock")
	p := qmptest.StartArgs(t, binary, nil, "-monitor", "chardev:h", "-qmp", "chardev:q",
		"-chardev", "socket,id=h,path="+hmpSock+",server=on,wait=off",
		"-chardev", "socket,id=q,path="+qmpSock+",server=on,wait=off")
	waitFor(t, "the sockets", func() bool {
		_, e1 := os.Stat(hmpSock)
		_, e2 := os.Stat(qmpSock)
		return e1 == nil && e2 == nil
	})
	conn, err := net.Dial("unix", hmpSock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "info name\n")
	banner := "QEMU " + monitor.QEMUVersion() + " monitor - type 'help' for more information\r\n(qemu) "
	got := make([]byte, len(banner))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != banner {
		t.Errorf("HMP on chardev:h: %q, %v", got, err)
	}
	c := qmptest.Dial(t, qmpSock)
	c.Negotiate()
	ret(t, c.Execute("quit", nil))
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}

	sock := "socket,id=c0,path=" + filepath.Join(dir, "c0.sock") + ",server=on,wait=off"
	for _, args := range [][]string{
		{"-monitor", "chardev:nosuch"},
		{"-qmp", "chardev:nosuch"},
		{"-qmp", "chardev:"},
		{"-monitor", "chardev:c0,x=1"},
		{"-chardev", sock, "-monitor", "chardev:c0", "-mon", "chardev=c0"},
		{"-chardev", sock, "-qmp", "chardev:c0", "-qmp", "chardev:c0"},
		{"-monitor", "stdio", "-qmp", "stdio"},
		{"-daemonize", "-qmp", "stdio"},
	} {
		_, errOut, code := runBinary(t, "", args...)
		q := qemuStderr(t, args...)
		if code != 1 || strings.TrimPrefix(errOut, "minivmm: ") != q {
			t.Errorf("%v: exit %d, %q; QEMU says %q", args, code, errOut, q)
		}
	}
}

// TestHMPSocketMonitor: -mon mode=readline on a socket chardev, as a
// person connects with socat or nc.
func TestHMPSocketMonitor(t *testing.T) {
	fdtest.Check(t)
	sock := filepath.Join(t.TempDir(), "hmp.sock")
	p := startVMM(t, nil, "-chardev", "socket,id=h,path="+sock+",server=on,wait=off", "-mon", "chardev=h,mode=readline")
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "info name\nsystem_powerdown\n")
	if ev := c.Event("POWERDOWN", 5*time.Second); ev == nil {
		t.Fatal("no POWERDOWN")
	}
	if data := c.Event("SHUTDOWN", 5*time.Second)["data"].(map[string]any); data["reason"] != "guest-shutdown" || data["guest"] != true {
		t.Errorf("SHUTDOWN %v", data)
	}
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("HMP socket left behind")
	}
}

// TestPidfileBeforeMonitor: while a monitor waits for its first client
// (server=on, wait=on), the pidfile is written already, in QEMU and in
// minivmm: a manager that sees the socket may read the pid. (A daemon's
// parent exits only after both: TestDaemonize.)
func TestPidfileBeforeMonitor(t *testing.T) {
	fdtest.Check(t)
	needQEMU(t)
	for _, bin := range []string{qmptest.QEMUBinary, binary} {
		dir := t.TempDir()
		sock, pid := filepath.Join(dir, "q.sock"), filepath.Join(dir, "vm.pid")
		cmd := exec.Command(bin, "-machine", "none", "-nodefaults", "-display", "none",
			"-pidfile", pid, "-qmp", "unix:"+sock+",server=on") // waits for a client
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, bin+"'s socket", func() bool { _, err := os.Stat(sock); return err == nil })
		if b, err := os.ReadFile(pid); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(cmd.Process.Pid) {
			t.Errorf("%s: the socket is there, the pidfile holds %q (%v)", bin, b, err)
		}
		// QEMU takes no signal while it waits for the client: kill both.
		cmd.Process.Kill()
		cmd.Wait()
	}
}

func TestDaemonize(t *testing.T) {
	fdtest.Check(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "q.sock")
	pid := filepath.Join(dir, "vm.pid")
	start := time.Now()
	out, errOut, code := runBinary(t, "", "-daemonize", "-pidfile", pid, "-qmp", "unix:"+sock+",server=on,wait=off")
	if code != 0 || out != "" || errOut != "" {
		t.Fatalf("exit %d, %q %q", code, out, errOut)
	}
	// The parent has exited: the pidfile and the socket are there, and
	// the pid is a live process other than the parent.
	b, err := os.ReadFile(pid)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if n <= 0 || syscall.Kill(n, 0) != nil {
		t.Fatalf("pidfile %q names no live process", b)
	}
	t.Cleanup(func() { syscall.Kill(n, syscall.SIGKILL) })
	c := qmptest.Dial(t, sock)
	c.Negotiate()
	ret(t, c.Execute("quit", nil))
	c.WaitClosed(5 * time.Second)
	waitFor(t, "the daemon to exit", func() bool { return syscall.Kill(n, 0) != nil })
	if _, err := os.Stat(pid); !os.IsNotExist(err) {
		t.Errorf("pidfile left behind")
	}
	t.Logf("daemonized in %v", time.Since(start))

	// Errors in the child reach the parent's stderr and exit status.
	for _, args := range [][]string{
		{"-daemonize", "-monitor", "unix:/nonexistent/dir/s,server=on,wait=off"},
		{"-daemonize", "-monitor", "stdio"},
		{"-daemonize", "-pidfile", "/nonexistent/dir/p"},
	} {
		_, errOut, code := runBinary(t, "", args...)
		q := qemuStderr(t, args...)
		if code != 1 || strings.TrimPrefix(errOut, "minivmm: ") != q {
			t.Errorf("%v: exit %d, %q; QEMU says %q", args, code, errOut, q)
		}
	}
}

// TestDefaultSocketXDG: without a monitor option the QMP socket is made in
// $XDG_RUNTIME_DIR, else in $TMPDIR.
func TestDefaultSocketXDG(t *testing.T) {
	fdtest.Check(t)
	for _, env := range []string{"XDG_RUNTIME_DIR", "TMPDIR"} {
		dir, err := os.MkdirTemp("/tmp", "xdg")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		cmd := exec.Command(binary)
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(e string) bool {
			return strings.HasPrefix(e, "XDG_RUNTIME_DIR=") || strings.HasPrefix(e, "TMPDIR=")
		}), env+"="+dir)
		var e bytes.Buffer
		cmd.Stderr = &e
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sock := filepath.Join(dir, "minivmm-"+strconv.Itoa(cmd.Process.Pid)+".qmp")
		waitFor(t, "the default socket", func() bool { _, err := os.Stat(sock); return err == nil })
		c := qmptest.Dial(t, sock)
		c.Negotiate()
		ret(t, c.Execute("quit", nil))
		cmd.Wait()
		if !strings.Contains(e.String(), "QMP monitor listening on "+sock+"\n") {
			t.Errorf("%s: stderr %q", env, e.String())
		}
		if _, err := os.Stat(sock); !os.IsNotExist(err) {
			t.Errorf("%s: socket left behind", env)
		}
	}
}
