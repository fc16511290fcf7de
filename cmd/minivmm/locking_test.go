package main

import (
	"bytes"
	"fmt"
	"io"
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

func lockImage(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, "1M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	return p
}

// lockHeld reports whether anyone holds a lock on the image's byte 100
// (every locking user's "consistent read").
func lockHeld(t *testing.T, path string) bool {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: unix.SEEK_SET, Start: 100, Len: 1}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
		t.Fatal(err)
	}
	return lk.Type != unix.F_UNLCK
}

// lockFailing runs a command that must fail and returns its stderr.
func lockFailing(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err == nil {
		t.Fatalf("%s %v succeeded", name, args)
	}
	return stderr.String()
}

func lockRuns(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// vmmFdCount is how many fds the VMM has open.
func vmmFdCount(t *testing.T, pid int) int {
	t.Helper()
	n, err := fdtest.CountOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The VMM holding an image read-write, over a path and over an fdset
// (QMP blockdev-add): qemu-img info is refused with its own words, -U gets
// through, and blockdev-del lets it in and leaves no fd behind.
func TestVMMLockRefusesQemuImg(t *testing.T) {
	needTools(t, "qemu-img", "qemu-io")
	fdtest.Check(t)
	for _, overFdset := range []bool{false, true} {
		t.Run(map[bool]string{false: "path", true: "fdset"}[overFdset], func(t *testing.T) {
			path := lockImage(t)
			var files []*os.File
			var args []string
			filename := path
			if overFdset {
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				files = []*os.File{f}
				args = []string{"-add-fd", "fd=3,set=1"}
				filename = "/dev/fdset/1"
			}
			p := startVMM(t, files, args...)
			c := qmptest.Dial(t, p.Sock)
			c.Negotiate()
			baseline := vmmFdCount(t, p.Pid)
			ret(t, c.Execute("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "d",
				"file": map[string]any{"driver": "file", "filename": filename}}))
			want := fmt.Sprintf("qemu-img: Could not open '%s': Failed to get shared \"write\" lock\n"+
				"Is another process using the image [%s]?\n", path, path)
			if got := lockFailing(t, "qemu-img", "info", path); got != want {
				t.Errorf("qemu-img info: %q, want %q", got, want)
			}
			lockRuns(t, "qemu-img", "info", "-U", path)
			ret(t, c.Execute("blockdev-del", map[string]any{"node-name": "d"}))
			lockRuns(t, "qemu-img", "info", path)
			if lockHeld(t, path) {
				t.Error("locks left after blockdev-del")
			}
			if n := vmmFdCount(t, p.Pid); n != baseline {
				t.Errorf("VMM fds %d after blockdev-del, %d before blockdev-add", n, baseline)
			}
		})
	}
}

// QEMU holding an image read-write: minivmm img and io are refused as
// qemu-img and qemu-io are, and so is the VMM's blockdev-add, over a path
// and over an fdset.
func TestQEMULockRefusesMinivmm(t *testing.T) {
	needTools(t, "qemu-img", "qemu-io")
	fdtest.Check(t)
	path := lockImage(t)
	holder := exec.Command("qemu-io", "-f", "qcow2", path)
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		holder.Wait()
	}()
	for deadline := time.Now().Add(10 * time.Second); !lockHeld(t, path); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("qemu-io took no lock")
		}
	}
	// The tools: what they print is QEMU's, word for word after the
	// program's name (the binary may call itself "minivmm img"), the
	// hint line included.
	firstLine := func(s string) string {
		if _, msg, ok := strings.Cut(s, ": "); ok {
			return msg
		}
		return s
	}
	for _, tc := range []struct {
		qemu    []string
		minivmm []string
	}{
		{[]string{"qemu-img", "info", path}, []string{"img", "info", path}},
		{[]string{"qemu-img", "check", path}, []string{"img", "check", path}},
		{[]string{"qemu-io", "-c", "read 0 512", path}, []string{"io", "-c", "read 0 512", path}},
		{[]string{"qemu-io", "-r", "-c", "read 0 512", path}, []string{"io", "-r", "-c", "read 0 512", path}},
	} {
		want := firstLine(lockFailing(t, tc.qemu[0], tc.qemu[1:]...))
		got := firstLine(lockFailing(t, binary, tc.minivmm...))
		if got != want {
			t.Errorf("minivmm %s: %q; %s says %q", strings.Join(tc.minivmm, " "), got, tc.qemu[0], want)
		}
		if !strings.Contains(got, `Failed to get`) {
			t.Errorf("minivmm %s was not refused for the lock: %q", strings.Join(tc.minivmm, " "), got)
		}
	}
	// img create of an image in use is refused before anything is
	// truncated (qemu-img 7.2 truncates a raw image under its writer,
	// and deletes a qcow2 one when its create then fails).
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"raw", "qcow2"} {
		got := lockFailing(t, binary, "img", "create", "-f", format, path, "1M")
		want := fmt.Sprintf("minivmm img: %s: Failed to get \"write\" lock\nIs another process using the image [%s]?\n", path, path)
		if !strings.HasSuffix(got, want) {
			t.Errorf("img create -f %s of an image in use: %q, want it to end %q", format, got, want)
		}
		if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, before) {
			t.Errorf("img create -f %s changed an image in use (%v)", format, err)
		}
	}
	// -U lets a reader in, and a check (which reads the file as qcow2
	// does: force-share reaches it too).
	lockRuns(t, binary, "img", "info", "-U", path)
	lockRuns(t, "qemu-img", "check", "-U", path)
	lockRuns(t, binary, "img", "check", "-U", path)
	// The VMM's command line, with the hint, as qemu-system-x86_64 says it.
	blockdev := "driver=qcow2,node-name=d,file.driver=file,file.filename=" + path
	want := fmt.Sprintf("-blockdev %s: Failed to get \"write\" lock\nIs another process using the image [%s]?\n", blockdev, path)
	if got := lockFailing(t, binary, "-blockdev", blockdev); got != "minivmm: "+want {
		t.Errorf("minivmm -blockdev: %q, want %q", got, "minivmm: "+want)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		got := lockFailing(t, "qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none", "-blockdev", blockdev)
		if got != "qemu-system-x86_64: "+want {
			t.Errorf("qemu-system-x86_64 -blockdev: %q, want %q", got, "qemu-system-x86_64: "+want)
		}
	}
	// The VMM, over the path and over an fdset.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := startVMM(t, []*os.File{f}, "-add-fd", "fd=3,set=1")
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	baseline := vmmFdCount(t, p.Pid)
	for _, filename := range []string{path, "/dev/fdset/1"} {
		got := errDesc(t, c.Execute("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "d",
			"file": map[string]any{"driver": "file", "filename": filename}}))
		if got != `Failed to get "write" lock` {
			t.Errorf("blockdev-add over %s: %q", filename, got)
		}
		if n := vmmFdCount(t, p.Pid); n != baseline {
			t.Errorf("VMM fds %d after a refused blockdev-add, %d before", n, baseline)
		}
	}
	// force-share lets a reader in.
	ret(t, c.Execute("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "d", "read-only": true, "force-share": true,
		"file": map[string]any{"driver": "file", "filename": path}}))
	ret(t, c.Execute("blockdev-del", map[string]any{"node-name": "d"}))
	if n := vmmFdCount(t, p.Pid); n != baseline {
		t.Errorf("VMM fds %d after blockdev-del, %d before blockdev-add", n, baseline)
	}
}

// QEMU 7.2 closes a node's fdset dup without unlocking it, so the set's fds
// keep the locks: over an fdset with an O_RDONLY and an O_RDWR fd, a node
// reopened ro -> rw -> ro -> rw conflicts with its own stale locks
// ("Failed to get "write" lock", as block-stream does), and after
// blockdev-del the set still keeps writers out. minivmm releases a dup's
// locks before closing it.
func TestVMMReopenOverFdsetLeavesNoStaleLocks(t *testing.T) {
	needTools(t, "qemu-img", "qemu-io")
	fdtest.Check(t)
	// qcow2: a format locks its file whether or not anyone writes to it
	// (a raw node nobody uses locks nothing, in QEMU as here).
	path := lockImage(t)
	var files []*os.File
	for _, mode := range []int{os.O_RDONLY, os.O_RDWR} {
		f, err := os.OpenFile(path, mode, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	p := startVMM(t, files, "-add-fd", "fd=3,set=1", "-add-fd", "fd=4,set=1")
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	file := func(ro bool) map[string]any {
		return map[string]any{"driver": "file", "node-name": "f", "filename": "/dev/fdset/1", "read-only": ro}
	}
	node := func(ro bool) map[string]any {
		return map[string]any{"driver": "qcow2", "node-name": "q", "read-only": ro, "file": "f"}
	}
	ret(t, c.Execute("blockdev-add", file(true)))
	ret(t, c.Execute("blockdev-add", node(true)))
	for i, ro := range []bool{false, true, false, true, false} {
		if reply := c.Execute("blockdev-reopen", map[string]any{"options": []any{file(ro), node(ro)}}); reply["error"] != nil {
			t.Fatalf("step %d: reopen read-only=%t: %v", i, ro, reply["error"])
		}
		// Reader or writer, the node keeps qemu-io's writer out.
		if got := lockFailing(t, "qemu-io", "-f", "raw", "-c", "write 0 512", path); !strings.Contains(got, `Failed to get "write" lock`) {
			t.Errorf("step %d: qemu-io writer: %q", i, got)
		}
	}
	ret(t, c.Execute("blockdev-del", map[string]any{"node-name": "q"}))
	ret(t, c.Execute("blockdev-del", map[string]any{"node-name": "f"}))
	// The set's fds are still open in the VMM: nothing may be left on them.
	if lockHeld(t, path) {
		t.Fatal("locks left in the fdset after blockdev-del")
	}
	lockRuns(t, "qemu-io", "-f", "raw", "-c", "write 0 512", path)
}
