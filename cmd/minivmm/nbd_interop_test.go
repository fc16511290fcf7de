package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
)

// nbdImage is a 64 MiB qcow2 image with 1 MiB of data at 0 and 1 MiB of
// zeroes written at 4 MiB.
func nbdImage(t *testing.T, dir string) string {
	t.Helper()
	img := filepath.Join(dir, "disk.qcow2")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
	mustRun(t, "qemu-io", "-c", "write -q -P 0xab 0 1M", "-c", "write -q -z 4M 1M", img)
	return img
}

// startNBDExport serves img (qcow2) as the writable NBD export "disk"
// on a unix socket; it returns the export's URI and minivmm.
func startNBDExport(t *testing.T, dir, img string, extra ...string) (string, *qmptest.Process) {
	t.Helper()
	sock := filepath.Join(dir, "nbd.sock")
	args := append([]string{
		"-blockdev", "driver=file,node-name=f,filename=" + img,
		"-blockdev", "driver=qcow2,node-name=q,file=f",
		"-nbd-server", "addr.type=unix,addr.path=" + sock,
		"-export", "type=nbd,id=e,node-name=q,name=disk,description=a disk,writable=on,allocation-depth=on",
		"-pidfile", filepath.Join(dir, "pid"),
	}, extra...)
	p := startVMM(t, nil, args...)
	// The pidfile is the readiness signal: the export serves by then.
	if _, err := os.Stat(filepath.Join(dir, "pid")); err != nil {
		t.Fatalf("no pidfile once the monitor listens: %v", err)
	}
	return "nbd+unix:///disk?socket=" + sock, p
}

// settledFds waits for minivmm's fd count to come back to want (a client
// that has exited may still be being disconnected).
func settledFds(t *testing.T, pid, want int, after string) {
	t.Helper()
	var n int
	for i := 0; i < 500; i++ {
		var err error
		if n, err = fdtest.CountOf(pid); err != nil {
			t.Fatal(err)
		}
		if n == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("after %s: minivmm has %d fds open, %d before", after, n, want)
}

// steadyFds is minivmm's fd count once it has stopped changing (the
// same for 100 ms): a daemon just started may still close an fd of its
// start-up (under the race detector, a while after its pidfile appears).
func steadyFds(t *testing.T, pid int) int {
	t.Helper()
	last, same := -1, 0
	for i := 0; i < 500 && same < 5; i++ {
		n, err := fdtest.CountOf(pid)
		if err != nil {
			t.Fatal(err)
		}
		if n == last {
			same++
		} else {
			last, same = n, 0
		}
		time.Sleep(20 * time.Millisecond)
	}
	return last
}

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// TestNBDExportRealClients: qemu-img, qemu-io, nbdinfo and nbdcopy read
// and write minivmm's export; every connection they make is gone once
// they exit, and the image is consistent after.
func TestNBDExportRealClients(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-io", "nbdinfo", "nbdcopy")
	dir := t.TempDir()
	img := nbdImage(t, dir)
	uri, p := startNBDExport(t, dir, img)
	base := steadyFds(t, p.Pid)
	for _, tt := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"nbdinfo --size", func(t *testing.T) {
			if out := strings.TrimSpace(output(t, "nbdinfo", "--size", uri)); out != "67108864" {
				t.Errorf("size %q", out)
			}
		}},
		{"nbdinfo --list", func(t *testing.T) {
			out := output(t, "nbdinfo", "--list", uri)
			for _, want := range []string{`export="disk"`, "description: a disk", "base:allocation", "qemu:allocation-depth", "can_multi_conn: true", "block_size_maximum: 33554432"} {
				if !strings.Contains(out, want) {
					t.Errorf("nbdinfo --list lacks %q:\n%s", want, out)
				}
			}
		}},
		{"nbdinfo --map", func(t *testing.T) {
			got := strings.Fields(output(t, "nbdinfo", "--map", uri))
			want := strings.Fields("0 1048576 0 data 1048576 66060288 3 hole,zero")
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("map %v, want %v", got, want)
			}
			got = strings.Fields(output(t, "nbdinfo", "--map=qemu:allocation-depth", uri))
			want = strings.Fields("0 1048576 1 local 1048576 3145728 0 absent 4194304 1048576 1 local 5242880 61865984 0 absent")
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("allocation depth map %v, want %v", got, want)
			}
		}},
		{"qemu-img info", func(t *testing.T) {
			if out := output(t, "qemu-img", "info", uri); !strings.Contains(out, "virtual size: 64 MiB (67108864 bytes)") {
				t.Errorf("qemu-img info:\n%s", out)
			}
		}},
		{"qemu-img map", func(t *testing.T) {
			// What qemu-img map says of the export is what it says of
			// the image's contents (data where written, zeroes elsewhere).
			got := output(t, "qemu-img", "map", "--output=json", uri)
			want := `[{ "start": 0, "length": 1048576, "depth": 0, "present": true, "zero": false, "data": true, "offset": 0},
{ "start": 1048576, "length": 66060288, "depth": 0, "present": true, "zero": true, "data": false, "offset": 1048576}]`
			if strings.TrimSpace(got) != want {
				t.Errorf("qemu-img map:\n%s", got)
			}
		}},
		{"qemu-io", func(t *testing.T) {
			out := output(t, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 8M 64k", "-c", "write -f -P 0x11 12M 4k", "-c", "read -P 0x5a 8M 64k", "-c", "read -P 0x11 12M 4k", "-c", "read -P 0xab 0 1M", "-c", "write -z 8M 4k", "-c", "read -P 0 8M 4k", uri)
			if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "error") {
				t.Errorf("qemu-io:\n%s", out)
			}
		}},
		{"qemu-img convert and compare", func(t *testing.T) {
			cp := filepath.Join(dir, "copy.qcow2")
			mustRun(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", uri, cp)
			if out := output(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", uri, cp); !strings.Contains(out, "Images are identical") {
				t.Errorf("compare: %s", out)
			}
			// And back: a different image written over the export.
			src := filepath.Join(dir, "src.raw")
			mustRun(t, "qemu-img", "create", "-q", "-f", "raw", src, "64M")
			mustRun(t, "qemu-io", "-f", "raw", "-c", "write -q -P 0x77 16M 3M", src)
			mustRun(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, uri)
			if out := output(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri); !strings.Contains(out, "Images are identical") {
				t.Errorf("compare after convert into the export: %s", out)
			}
		}},
		{"nbdcopy both ways", func(t *testing.T) {
			out := filepath.Join(dir, "out.raw")
			mustRun(t, "nbdcopy", uri, out)
			if o := output(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", uri, out); !strings.Contains(o, "Images are identical") {
				t.Errorf("compare after nbdcopy out: %s", o)
			}
			in := filepath.Join(dir, "in.raw")
			mustRun(t, "qemu-img", "create", "-q", "-f", "raw", in, "64M")
			mustRun(t, "qemu-io", "-f", "raw", "-c", "write -q -P 0x42 0 5M", "-c", "write -q -P 0x43 40M 1M", in)
			mustRun(t, "nbdcopy", in, uri)
			if o := output(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", in, uri); !strings.Contains(o, "Images are identical") {
				t.Errorf("compare after nbdcopy in: %s", o)
			}
		}},
		{"qemu-img bench", func(t *testing.T) {
			for _, args := range [][]string{{"-d", "1"}, {"-d", "64"}, {"-d", "64", "-w"}} {
				a := append([]string{"bench", "-f", "raw", "-c", "2000", "-s", "4k"}, args...)
				out := output(t, "qemu-img", append(a, uri)...)
				if !strings.Contains(out, "Run completed in") {
					t.Errorf("qemu-img %v: %s", a, out)
				}
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t)
			settledFds(t, p.Pid, base, tt.name)
		})
	}
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	if r := c.Execute("quit", nil); r["error"] != nil {
		t.Fatal(r)
	}
	c.WaitClosed(10 * time.Second)
	// Once minivmm has exited, its image locks are gone.
	for i := 0; i < 1000 && p.Signal(syscall.Signal(0)) == nil; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if out, err := exec.Command("qemu-img", "check", img).CombinedOutput(); err != nil {
		t.Errorf("qemu-img check after the clients wrote: %v\n%s", err, out)
	}
}
