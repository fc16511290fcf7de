package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"minivmm/internal/qmptest"
)

// Helpers the chain, job and export interop tests share.

// killChain makes in dir the chain base <- mid <- top of 16M qcow2
// images that the kill tests commit, mid's data over base's, top
// written by topCmds (qemu-io -c commands).
func killChain(t *testing.T, dir string, topCmds ...string) {
	t.Helper()
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, "base.qcow2"), "16M")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", filepath.Join(dir, "mid.qcow2"), "16M")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", filepath.Join(dir, "top.qcow2"), "16M")
	mustRun(t, "qemu-io", "-c", "write -P 1 0 8M", filepath.Join(dir, "base.qcow2"))
	mustRun(t, "qemu-io", "-c", "write -P 2 1M 10M", "-c", "write -z 12M 1M", filepath.Join(dir, "mid.qcow2"))
	var args []string
	for _, c := range topCmds {
		args = append(args, "-c", c)
	}
	mustRun(t, "qemu-io", append(args, filepath.Join(dir, "top.qcow2"))...)
}

// startKillChain copies ref's chain into a new directory and starts
// minivmm on it, base and mid read-only under a read-write top, with job
// (a block-commit) running; the caller kills it.
func startKillChain(t *testing.T, ref, job string) (string, *qmptest.Process, *qmptest.Client) {
	t.Helper()
	dir := copyImages(t, ref, []string{"base", "mid", "top"})
	p := startVMM(t, nil)
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	for _, cmd := range []string{
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"base","read-only":true,"file":{"driver":"file","filename":"` + filepath.Join(dir, "base.qcow2") + `"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"mid","read-only":true,"backing":"base","file":{"driver":"file","filename":"` + filepath.Join(dir, "mid.qcow2") + `"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"top","backing":"mid","file":{"driver":"file","filename":"` + filepath.Join(dir, "top.qcow2") + `"}}}`,
		job,
	} {
		c.Send(cmd)
		if r := c.Reply(); r["error"] != nil {
			c.Close()
			t.Fatalf("%s: %v", cmd, r)
		}
	}
	return dir, p, c
}

// killAndCheck kills p (SIGKILL) after a while, then checks dir's chain:
// clusters a killed writer allocated but had not yet referenced are
// leaks (exit status 3: "no harm to data"), as after QEMU is killed;
// anything else is not accepted; and top reads as ref's.
func killAndCheck(t *testing.T, p *qmptest.Process, after time.Duration, ref, dir string) {
	t.Helper()
	time.Sleep(after)
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.Wait(10 * time.Second)
	for _, img := range []string{"base", "mid", "top"} {
		out, err := exec.Command("qemu-img", "check", filepath.Join(dir, img+".qcow2")).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 3) {
			t.Errorf("qemu-img check %s: %v\n%s", img, err, out)
		}
	}
	if out, err := exec.Command("qemu-img", "compare", filepath.Join(ref, "top.qcow2"), filepath.Join(dir, "top.qcow2")).CombinedOutput(); err != nil {
		t.Errorf("qemu-img compare top: %v\n%s", err, out)
	}
}

// startQSDBlockdevs starts qemu-storage-daemon in dir with blockdevs and
// a QMP monitor, and returns a client that has negotiated.
func startQSDBlockdevs(t *testing.T, dir string, blockdevs []string) *qmptest.Client {
	t.Helper()
	mon := filepath.Join(dir, "qmp.sock")
	args := []string{"--chardev", "socket,id=m,path=" + mon + ",server=on,wait=off", "--monitor", "chardev=m"}
	for _, b := range blockdevs {
		args = append(args, "--blockdev", b)
	}
	p := qmptest.StartArgs(t, "qemu-storage-daemon", nil, args...)
	for i := 0; ; i++ {
		if _, err := os.Stat(mon); err == nil {
			break
		}
		if i > 500 {
			t.Fatalf("qemu-storage-daemon did not listen: %s", p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	c := qmptest.Dial(t, mon)
	c.Negotiate()
	return c
}

// startVMMBlockdevs starts minivmm with blockdevs and returns a client
// that has negotiated.
func startVMMBlockdevs(t *testing.T, _ string, blockdevs []string) *qmptest.Client {
	t.Helper()
	var args []string
	for _, b := range blockdevs {
		args = append(args, "-blockdev", b)
	}
	p := startVMM(t, nil, args...)
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	return c
}

// blockdevArgs are blockdevs as qemu-storage-daemon's and minivmm's
// command lines spell them.
func blockdevArgs(blockdevs []string) (qsd, vmm []string) {
	for _, b := range blockdevs {
		qsd = append(qsd, "--blockdev", b)
		vmm = append(vmm, "-blockdev", b)
	}
	return qsd, vmm
}

// refusal runs name with args, which must fail (else what names what it
// accepted), and returns its first line's message about value.
func refusal(t *testing.T, what, value, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err == nil {
		t.Errorf("%s accepted %s", name, what)
	}
	line := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	_, msg, _ := strings.Cut(line, value+": ")
	return msg
}

// scriptAddFd plays a script's "add-fd SET IMAGE MODE": dir's IMAGE.qcow2
// opened O_RDONLY or O_RDWR, passed to add-fd into fdset SET.
func scriptAddFd(t *testing.T, c *qmptest.Client, dir, cmd string) {
	t.Helper()
	f := strings.Fields(cmd)
	flag := os.O_RDONLY
	if f[3] == "O_RDWR" {
		flag = os.O_RDWR
	}
	file, err := os.OpenFile(filepath.Join(dir, f[2]+".qcow2"), flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.Send(`{"execute":"add-fd","arguments":{"fdset-id":`+f[1]+`}}`, int(file.Fd()))
	file.Close()
	if r := c.Reply(); r["error"] != nil {
		t.Fatalf("%s: %v", cmd, r)
	}
}

// scriptFds is a script's "fds": the modes of the fds process pid holds
// on each of dir's images, "img:mode,mode img:...".
func scriptFds(t *testing.T, c *qmptest.Client, pid int, dir string, images []string) string {
	t.Helper()
	var parts []string
	for _, img := range images {
		m := nodeFdModes(t, c, pid, filepath.Join(dir, img+".qcow2"))
		slices.Sort(m)
		parts = append(parts, img+":"+strings.Join(m, ","))
	}
	return strings.Join(parts, " ")
}

// scriptWait is a script's "wait EVENT [DATA...]": the events pending up
// to the first that matches, waiting for it if it has not come; pend
// (which drain fills with events as norm renders them) keeps those
// after it.
func scriptWait(c *qmptest.Client, f []string, pend *[]string, drain func(), norm func(map[string]any) string) string {
	drain()
	want := strings.Join(f[1:], " ")
	match := func(e string) bool { return e == want || strings.HasPrefix(e, want+" ") }
	for !slices.ContainsFunc(*pend, match) {
		e := c.Event(f[1], 20*time.Second)
		drain()
		*pend = append(*pend, norm(e))
	}
	i := slices.IndexFunc(*pend, match)
	// Every event up to it, the standby/ready pairs of the drained
	// sections a job went through included.
	line := strings.Join((*pend)[:i+1], "; ")
	*pend = (*pend)[i+1:]
	return line
}

// copyImages copies ref's IMAGE.qcow2 of each of images into a new
// directory, and returns it.
func copyImages(t *testing.T, ref string, images []string) string {
	t.Helper()
	dir := t.TempDir()
	for _, img := range images {
		mustRun(t, "cp", filepath.Join(ref, img+".qcow2"), dir)
	}
	return dir
}

// quitAndWait sends quit over c and checks that p exits cleanly.
func quitAndWait(t *testing.T, c *qmptest.Client, p *qmptest.Process) {
	t.Helper()
	c.Send(`{"execute":"quit"}`)
	c.WaitClosed(20 * time.Second)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Errorf("exit status %d\n%s", code, p.Output())
	}
}
