package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
)

// TestSnapshotOverFdsetsLikeQEMU plays, on QEMU and on minivmm, snapshots
// of a -drive whose image comes from an fdset (an O_RDONLY and an O_RDWR
// fd, as libvirt passes them), onto overlays that are fdsets too: one the
// management layer made (mode=existing), one minivmm formats through the
// set's fd (absolute-paths). A transaction that fails after opening an
// overlay leaves the process's fd count where it was; replies and graphs
// must be QEMU's, and so must the header of the image made through the
// fdset (qemu-img info).
func TestSnapshotOverFdsetsLikeQEMU(t *testing.T) {
	fdtest.Check(t)
	needTools(t, "qemu-img", "qemu-system-x86_64")
	script := []string{
		`{"execute":"qmp_capabilities"}`,
		`add-fd 2 ov.qcow2 O_RDONLY`,
		`add-fd 2 ov.qcow2 O_RDWR`,
		`add-fd 3 new.qcow2 O_RDONLY`,
		`add-fd 3 new.qcow2 O_RDWR`,
		`add-fd 4 junk.qcow2 O_RDONLY`,
		`add-fd 4 junk.qcow2 O_RDWR`,
		`fds`,
		`{"execute":"transaction","arguments":{"actions":[{"type":"blockdev-snapshot-sync","data":{"device":"d0","snapshot-file":"/dev/fdset/4","snapshot-node-name":"junk","mode":"existing"}},{"type":"abort","data":{}}]}}`,
		`fds`,
		`{"execute":"query-named-block-nodes"}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"device":"d0","snapshot-file":"/dev/fdset/3","snapshot-node-name":"new"}}`,
		`{"execute":"query-named-block-nodes"}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"device":"d0","snapshot-file":"/dev/fdset/2","snapshot-node-name":"ov","mode":"existing"}}`,
		`{"execute":"query-named-block-nodes"}`,
		`{"execute":"query-block"}`,
		`{"execute":"query-fdsets"}`,
	}
	modes := map[string]int{"O_RDONLY": os.O_RDONLY, "O_RDWR": os.O_RDWR}
	play := func(start func(files []*os.File, args ...string) (string, int)) (got []string, fds []int) {
		dir := t.TempDir()
		base, ov, created := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "ov.qcow2"), filepath.Join(dir, "new.qcow2")
		mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
		if err := os.WriteFile(created, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", created, "-F", "qcow2", ov, "1M")
		mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", filepath.Join(dir, "junk.qcow2"))
		ro, err := os.Open(base)
		if err != nil {
			t.Fatal(err)
		}
		defer ro.Close()
		rw, err := os.OpenFile(base, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer rw.Close()
		sock, pid := start([]*os.File{ro, rw}, "-add-fd", "fd=3,set=1", "-add-fd", "fd=4,set=1",
			"-drive", "if=none,id=d0,node-name=base,format=qcow2,file=/dev/fdset/1")
		c := qmptest.Dial(t, sock)
		defer c.Close()
		for _, cmd := range script {
			switch f := strings.Fields(cmd); f[0] {
			case "add-fd":
				file, err := os.OpenFile(filepath.Join(dir, f[2]), modes[f[3]], 0)
				if err != nil {
					t.Fatal(err)
				}
				c.Send(`{"execute":"add-fd","arguments":{"fdset-id":`+f[1]+`}}`, int(file.Fd()))
				file.Close()
				r := c.Reply()
				if r["error"] != nil {
					t.Fatalf("%s: %v", cmd, r)
				}
				got = append(got, "added")
			case "fds":
				n, err := fdtest.CountOf(pid)
				if err != nil {
					t.Fatal(err)
				}
				got, fds = append(got, "fds"), append(fds, n)
			default:
				c.Send(cmd)
				// The fd numbers in query-fdsets are each process's own.
				got = append(got, fdNumber.ReplaceAllString(strings.ReplaceAll(summarizeGraph(c.Reply()), dir, "@DIR@"), `"fd":N`))
			}
		}
		c.Close()
		out, err := exec.Command("qemu-img", "info", "-U", created).CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-img info: %v\n%s", err, out)
		}
		var keep []string
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(l, "disk size:") {
				keep = append(keep, l)
			}
		}
		return append(got, strings.ReplaceAll(strings.Join(keep, "\n"), dir, "@DIR@")), fds
	}
	qemu, qemuFds := play(func(files []*os.File, args ...string) (string, int) { return qmptest.StartQEMUFiles(t, files, args...) })
	vmm, vmmFds := play(func(files []*os.File, args ...string) (string, int) {
		p := startVMM(t, files, args...)
		return p.Sock, p.Pid
	})
	script = append(script, "qemu-img info new.qcow2")
	// The two processes hold different numbers of fds of their own; what
	// must agree is that the failed transaction left each where it was.
	if qemuFds[0] != qemuFds[1] || vmmFds[0] != vmmFds[1] {
		t.Errorf("fds before and after the failed transaction: qemu %v, minivmm %v", qemuFds, vmmFds)
	}
	for i := range script {
		if qemu[i] != vmm[i] {
			t.Errorf("%s\n  qemu:    %s\n  minivmm: %s", script[i], qemu[i], vmm[i])
		}
	}
}

var fdNumber = regexp.MustCompile(`"fd":[0-9]+`)
