package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/internal/qmptest"
)

// nodeFdModes lists how the VMM holds path, leaving out the fdsets' own
// fds: the dups its block nodes hold, as "O_RDONLY", "O_RDWR|O_DIRECT"...
func nodeFdModes(t *testing.T, c *qmptest.Client, pid int, path string) []string {
	t.Helper()
	user := map[int]bool{}
	for _, fds := range fdsets(t, c) {
		for _, fd := range fds {
			user[int(fd)] = true
		}
	}
	var modes []string
	for fd, target := range childFds(t, pid) {
		if target != path || user[fd] {
			continue
		}
		fl := fdinfoFlags(t, pid, fd)
		m := map[int]string{unix.O_RDONLY: "O_RDONLY", unix.O_WRONLY: "O_WRONLY", unix.O_RDWR: "O_RDWR"}[fl&unix.O_ACCMODE]
		if fl&unix.O_DIRECT != 0 {
			m += "|O_DIRECT"
		}
		modes = append(modes, m)
	}
	return modes
}

func TestBlockdevOverCommandLineFdset(t *testing.T) {
	t.Parallel()
	path, files := imageFile(t, os.O_RDONLY, os.O_RDWR)
	p := startVMM(t, files, "-fdset-only",
		"-add-fd", "fd=3,set=2,opaque=rdonly", "-add-fd", "fd=4,set=2,opaque=rdwr",
		"-blockdev", "driver=file,node-name=f,filename=/dev/fdset/2,read-only=on",
		"-blockdev", `{"driver":"raw","node-name":"disk","file":"f","read-only":true}`)
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	if got := nodeFdModes(t, c, p.Pid, path); strings.Join(got, ",") != "O_RDONLY" {
		t.Fatalf("nodes hold %v", got)
	}
	// Read-write for both, in one transaction: the file node takes the
	// set's O_RDWR fd and drops its O_RDONLY dup.
	ret(t, c.Execute("blockdev-reopen", map[string]any{"options": []any{
		map[string]any{"driver": "file", "node-name": "f", "filename": "/dev/fdset/2", "read-only": false},
		map[string]any{"driver": "raw", "node-name": "disk", "file": "f", "read-only": false},
	}}))
	if got := nodeFdModes(t, c, p.Pid, path); strings.Join(got, ",") != "O_RDWR" {
		t.Fatalf("after reopen nodes hold %v", got)
	}
	nodes := ret(t, c.Execute("query-named-block-nodes", nil)).([]any)
	if len(nodes) != 2 || nodes[0].(map[string]any)["node-name"] != "disk" || nodes[0].(map[string]any)["ro"] != false {
		t.Fatalf("query-named-block-nodes = %v", nodes)
	}
	// Confined: a plain path is refused, naming it.
	got := errDesc(t, c.Execute("blockdev-add", map[string]any{"driver": "file", "node-name": "g", "filename": path}))
	if !strings.Contains(got, path) || !strings.Contains(got, "-fdset-only") {
		t.Errorf("plain path under -fdset-only: %q", got)
	}
	if got := errDesc(t, c.Execute("blockdev-del", map[string]any{"node-name": "f"})); got != "Block device f is in use" {
		t.Errorf("blockdev-del of a child: %q", got)
	}
	ret(t, c.Execute("blockdev-del", map[string]any{"node-name": "disk"}))
	ret(t, c.Execute("blockdev-del", map[string]any{"node-name": "f"}))
	if got := nodeFdModes(t, c, p.Pid, path); len(got) != 0 {
		t.Fatalf("after blockdev-del the VMM still holds %v", got)
	}
	if sets := fdsets(t, c); len(sets[2]) != 2 {
		t.Fatalf("command-line set after blockdev-del: %v", sets)
	}
}

func TestDriveOption(t *testing.T) {
	t.Parallel()
	path, _ := imageFile(t)
	p := startVMM(t, nil, "-drive", "file="+path+",format=raw,if=none,id=drive0,cache=none")
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	blocks := ret(t, c.Execute("query-block", nil)).([]any)
	if len(blocks) != 1 {
		t.Fatalf("query-block = %v", blocks)
	}
	b := blocks[0].(map[string]any)
	ins := b["inserted"].(map[string]any)
	if b["device"] != "drive0" || ins["drv"] != "raw" || ins["file"] != path || ins["cache"].(map[string]any)["direct"] != true {
		t.Fatalf("query-block = %v", b)
	}
	// auto-read-only without a writer: the file is held read-only, with
	// O_DIRECT for cache=none.
	if got := nodeFdModes(t, c, p.Pid, path); strings.Join(got, ",") != "O_RDONLY|O_DIRECT" {
		t.Fatalf("-drive holds %v", got)
	}
	if got := errDesc(t, c.Execute("blockdev-del", map[string]any{"node-name": ins["node-name"]})); !strings.Contains(got, "in use") {
		t.Errorf("blockdev-del of a drive's node: %q", got)
	}
}

func TestBlockOptionErrors(t *testing.T) {
	t.Parallel()
	path, _ := imageFile(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-blockdev", "driver=nosuch,node-name=a"}, "minivmm: -blockdev driver=nosuch,node-name=a: Parameter 'driver' does not accept value 'nosuch'"},
		{[]string{"-blockdev", "driver=file,filename=" + path}, "'node-name' must be specified for the root node"},
		{[]string{"-blockdev", "driver=file,node-name=a,filename=/nonexistent"}, "Could not open '/nonexistent': No such file or directory"},
		{[]string{"-blockdev", "driver=file,node-name=a,read-only=maybe,filename=" + path}, "Parameter 'read-only' expects 'on' or 'off'"},
		{[]string{"-fdset-only", "-blockdev", "driver=file,node-name=a,filename=" + path}, "only /dev/fdset/N paths may be opened"},
		{[]string{"-drive", "file=" + path + ",format=raw,if=ide"}, "use if=virtio, or if=none"},
		{[]string{"-drive", "file=" + path + ",format=raw,if=none,readonly=on,read-only=on"}, "'read-only' and its alias 'readonly' can't be used at the same time"},
		{[]string{"-drive", "file=" + path + ",format=raw,if=none,discard=x"}, "minivmm: -drive file=" + path + ",format=raw,if=none,discard=x: Invalid discard option"},
		{[]string{"-blockdev", `{"driver":"file","node-name":"a","filename":1}`}, "Invalid parameter type for 'filename', expected: string"},
	} {
		p := qmptest.StartArgs(t, binary, nil, tc.args...)
		if code := p.Wait(10 * time.Second); code != 1 || !strings.Contains(p.Output(), tc.want) {
			t.Errorf("%v: exit %d, output %q; want 1 and %q", tc.args, code, p.Output(), tc.want)
		}
	}
}
