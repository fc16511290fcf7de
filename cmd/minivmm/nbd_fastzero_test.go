package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minivmm/internal/qmptest"
)

// fastZeroScript writes data, then asks for zeroes without fallback
// (write -z -n: BDRV_REQ_NO_FALLBACK, NBD_CMD_FLAG_FAST_ZERO over NBD):
// whole clusters, a partial one over data (refused on qcow2), a partial
// one over a hole, unmapping, and a long range; reads check what stays.
var fastZeroScript = []string{
	"write -P 0x11 0 256k",
	"write -z -n 0 64k",
	"write -z -n 65636 100",
	"write -z -n 300k 100",
	"write -z -n -u 128k 64k",
	"write -z -n 1M 2M",
	"write -z -n 4095 8193",
	"read -P 0 0 64k",
	"read -P 0x11 64k 64k",
	"read -P 0 128k 64k",
	"read -P 0 1M 2M",
}

func fastZeroArgs() []string {
	var args []string
	for _, c := range fastZeroScript {
		args = append(args, "-c", c)
	}
	return args
}

// runTool runs a tool and returns its output, timings masked, and exit
// status: the refused writes make qemu-io exit 1, which is compared too.
func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	status := "exit 0"
	if ee, ok := err.(*exec.ExitError); ok {
		status = ee.String()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return normalize(string(out)) + status
}

// TestIOFastZeroLikeQemuIO: io's write -z -n against qemu-io's on every
// driver that has a say (file, raw over file, qcow2 v3, v2 and with
// extended L2, null-co): the same output, the same refusals, the same
// image contents after.
func TestIOFastZeroLikeQemuIO(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-io")
	for _, tt := range []struct {
		name, fmt string
		create    []string
	}{
		{"raw", "raw", []string{"-f", "raw"}},
		{"qcow2", "qcow2", []string{"-f", "qcow2"}},
		{"qcow2-v2", "qcow2", []string{"-f", "qcow2", "-o", "compat=0.10"}},
		{"qcow2-extl2", "qcow2", []string{"-f", "qcow2", "-o", "extended_l2=on"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			theirs, mine := filepath.Join(dir, "theirs"), filepath.Join(dir, "mine")
			for _, img := range []string{theirs, mine} {
				mustRun(t, "qemu-img", append(append([]string{"create", "-q"}, tt.create...), img, "4M")...)
			}
			want := runTool(t, "qemu-io", append(append([]string{"-f", tt.fmt}, fastZeroArgs()...), theirs)...)
			got := runTool(t, binary, append(append([]string{"io", "-f", tt.fmt}, fastZeroArgs()...), mine)...)
			if got != want {
				t.Errorf("io:\n%s\nqemu-io:\n%s", got, want)
			}
			if out, err := exec.Command("qemu-img", "compare", "-f", tt.fmt, "-F", tt.fmt, theirs, mine).CombinedOutput(); err != nil {
				t.Errorf("images differ: %v\n%s", err, out)
			}
			// Maps are not compared: where zeroes land on clusters that
			// read as zeroes already, QEMU sets the zero flag and minivmm
			// leaves them unallocated (so for plain write -z too).
			if tt.fmt == "qcow2" {
				mustRun(t, "qemu-img", "check", mine)
			}
		})
	}
	t.Run("null-co", func(t *testing.T) {
		args := []string{"-c", "write -z -n 0 64k", "-c", "write -z 0 64k"}
		want := runTool(t, "qemu-io", append(append([]string{"--image-opts"}, args...), "driver=null-co")...)
		got := runTool(t, binary, append(append([]string{"io", "--image-opts"}, args...), "driver=null-co")...)
		if got != want {
			t.Errorf("io:\n%s\nqemu-io:\n%s", got, want)
		}
	})
}

// fastZeroServer serves img as the writable export "disk" with
// qemu-storage-daemon or minivmm; fmt is the node's format.
func fastZeroServer(t *testing.T, kind, dir, img, format string) (string, int) {
	t.Helper()
	sock := filepath.Join(dir, kind+".sock")
	pid := filepath.Join(dir, kind+".pid")
	args := []string{"-blockdev", "driver=file,node-name=f,filename=" + img, "-blockdev", "driver=" + format + ",node-name=d,file=f",
		"-nbd-server", "addr.type=unix,addr.path=" + sock, "-export", "type=nbd,id=e,node-name=d,name=disk,writable=on", "-pidfile", pid}
	var p *qmptest.Process
	if kind == "minivmm" {
		p = startVMM(t, nil, args...)
	} else {
		for i := range args {
			if strings.HasPrefix(args[i], "-") {
				args[i] = "-" + args[i]
			}
		}
		p = qmptest.StartArgs(t, "qemu-storage-daemon", nil, args...)
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
	return "nbd+unix:///disk?socket=" + sock, p.Pid
}

// TestNBDFastZeroLikeQSD: NBD_CMD_WRITE_ZEROES with FAST_ZERO, sent by
// qemu-io's nbd driver and by minivmm's (io write -z -n over an nbd
// URL), gets the same answers from minivmm's export as from
// qemu-storage-daemon's, over raw and qcow2 nodes, and leaves the same
// images; minivmm's fds are back to their count after.
func TestNBDFastZeroLikeQSD(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-io", "qemu-storage-daemon")
	for _, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			imgs := map[string]string{}
			uris := map[string]string{}
			var mvPid int
			for _, kind := range []string{"qemu-storage-daemon", "minivmm"} {
				imgs[kind] = filepath.Join(dir, kind+"."+format)
				mustRun(t, "qemu-img", "create", "-q", "-f", format, imgs[kind], "4M")
				var pid int
				uris[kind], pid = fastZeroServer(t, kind, dir, imgs[kind], format)
				if kind == "minivmm" {
					mvPid = pid
				}
			}
			base := steadyFds(t, mvPid)
			for _, client := range []string{"qemu-io", binary} {
				var outs []string
				for _, kind := range []string{"qemu-storage-daemon", "minivmm"} {
					args := append([]string{"-f", "raw"}, fastZeroArgs()...)
					if client == binary {
						args = append([]string{"io"}, args...)
					}
					outs = append(outs, runTool(t, client, append(args, uris[kind])...))
				}
				if outs[0] != outs[1] {
					t.Errorf("%s against qemu-storage-daemon:\n%s\nagainst minivmm:\n%s", filepath.Base(client), outs[0], outs[1])
				}
				settledFds(t, mvPid, base, filepath.Base(client))
			}
			if got, want := output(t, "qemu-img", "map", "--output=json", "-f", "raw", uris["minivmm"]), output(t, "qemu-img", "map", "--output=json", "-f", "raw", uris["qemu-storage-daemon"]); got != want {
				t.Errorf("map of minivmm's export:\n%s\nof qemu-storage-daemon's:\n%s", got, want)
			}
			if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", uris["minivmm"], uris["qemu-storage-daemon"]).CombinedOutput(); err != nil {
				t.Errorf("exports differ: %v\n%s", err, out)
			}
			settledFds(t, mvPid, base, "qemu-img")
		})
	}
}
