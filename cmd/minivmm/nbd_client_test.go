package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minivmm/internal/qmptest"
)

// nbdServer starts a server of img (qcow2) as the writable export "base"
// and returns its URI and pid: qemu-storage-daemon, qemu-nbd or minivmm.
func nbdServer(t *testing.T, kind, dir, img string) (string, int) {
	t.Helper()
	sock := filepath.Join(dir, kind+".sock")
	pid := filepath.Join(dir, kind+".pid")
	var p *qmptest.Process
	switch kind {
	case "qemu-storage-daemon":
		p = qmptest.StartArgs(t, kind, nil, "--blockdev", "driver=file,node-name=f,filename="+img,
			"--blockdev", "driver=qcow2,node-name=q,file=f", "--nbd-server", "addr.type=unix,addr.path="+sock,
			"--export", "type=nbd,id=e,node-name=q,name=base,writable=on", "--pidfile", pid)
	case "qemu-nbd":
		p = qmptest.StartArgs(t, kind, nil, "-f", "qcow2", "-k", sock, "-x", "base", "--shared=8", "--persistent", "--pid-file", pid, img)
	case "minivmm":
		// With its QMP socket made (after the pidfile), so that the fd
		// count taken next is the running daemon's.
		p = startVMM(t, nil,
			"-blockdev", "driver=file,node-name=f,filename="+img, "-blockdev", "driver=qcow2,node-name=q,file=f",
			"-nbd-server", "addr.type=unix,addr.path="+sock, "-export", "type=nbd,id=e,node-name=q,name=base,writable=on", "-pidfile", pid)
	}
	for i := 0; ; i++ {
		if _, err := os.Stat(pid); err == nil {
			break
		}
		if i > 1000 {
			t.Fatalf("%s did not start: %s", kind, p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "nbd+unix:///base?socket=" + sock, p.Pid
}

// TestNBDClient: minivmm's nbd driver reads and writes exports of
// qemu-storage-daemon, qemu-nbd and minivmm; a qcow2 overlay sits on the
// remote base; block status and zero writes pass through (img map agrees
// with qemu-img map); the server's fds are back to their count after.
func TestNBDClient(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-io", "qemu-storage-daemon", "qemu-nbd")
	for _, kind := range []string{"qemu-storage-daemon", "qemu-nbd", "minivmm"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "base.qcow2")
			mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
			mustRun(t, "qemu-io", "-c", "write -q -P 0xcd 0 2M", "-c", "write -q -z 8M 1M", img)
			uri, pid := nbdServer(t, kind, dir, img)
			base := steadyFds(t, pid)
			check := func(what string) {
				t.Helper()
				settledFds(t, pid, base, what)
			}
			if out := output(t, binary, "img", "info", uri); !strings.Contains(out, "virtual size: 64 MiB (67108864 bytes)") {
				t.Errorf("img info:\n%s", out)
			}
			check("img info")
			// Zeroes written through the driver stay zero clusters on
			// the server (no data crossed), and maps agree.
			out := output(t, binary, "io", "-f", "raw", "-c", "read -P 0xcd 0 2M", "-c", "write -P 0x12 4M 64k",
				"-c", "read -P 0x12 4M 64k", "-c", "write -z 4M 64k", "-c", "read -P 0 4M 64k", uri)
			if strings.Contains(out, "verification failed") || strings.Contains(out, "error") {
				t.Errorf("io:\n%s", out)
			}
			check("io")
			if got, want := output(t, binary, "img", "map", "--output=json", "-f", "raw", uri), output(t, "qemu-img", "map", "--output=json", "-f", "raw", uri); got != want {
				t.Errorf("img map of the export:\n%s\nqemu-img map:\n%s", got, want)
			}
			check("img map")
			ov := filepath.Join(dir, "ov.qcow2")
			mustRun(t, binary, "img", "create", "-q", "-f", "qcow2", "-b", uri, "-F", "raw", ov)
			out = output(t, binary, "io", "-f", "qcow2", "-c", "write -P 0x99 0 64k", "-c", "read -P 0x99 0 64k",
				"-c", "read -P 0xcd 64k 64k", "-c", "read -P 0 8M 1M", ov)
			if strings.Contains(out, "verification failed") || strings.Contains(out, "error") {
				t.Errorf("io on the overlay:\n%s", out)
			}
			if got, want := output(t, binary, "img", "map", "--output=json", "-f", "qcow2", ov), output(t, "qemu-img", "map", "--output=json", "-f", "qcow2", ov); got != want {
				t.Errorf("img map of the overlay:\n%s\nqemu-img map:\n%s", got, want)
			}
			mustRun(t, "qemu-img", "check", ov)
			check("overlay")
			// driver=nbd with server.* in a VMM, and a bad export name.
			sock := strings.TrimPrefix(uri, "nbd+unix:///base?socket=")
			p := startVMM(t, nil, "-blockdev", "driver=nbd,node-name=n,server.type=unix,server.path="+sock+",export=base")
			c := qmptest.Dial(t, p.Sock)
			c.Negotiate()
			r := c.Execute("blockdev-add", map[string]any{"driver": "nbd", "node-name": "bad", "export": "nope",
				"server": map[string]any{"type": "unix", "path": sock}})
			if e, _ := r["error"].(map[string]any); e == nil || !strings.Contains(e["desc"].(string), "Requested export not available") {
				t.Errorf("blockdev-add of a missing export: %v", r)
			}
			c.Execute("quit", nil)
			c.WaitClosed(10 * time.Second)
			check("driver=nbd in a VMM")
		})
	}
}
