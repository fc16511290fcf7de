package iotool

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
)

// TestZeroWriteDifferential: write -z on a version 3 qcow2 by qemu-io and
// by minivmm io, each on its own copy of the same images: same output,
// and images that map (qemu-img map --output=json) and read the same.
// QEMU marks clusters zero also where they read as zeroes already (no
// backing file; an unallocated partial cluster whose rest reads as
// zeroes through the backing chain), so that a backing file set later
// (rebase -u) does not show through (iotests 154, 179, 252).
func TestZeroWriteDifferential(t *testing.T) {
	fdtest.Check(t)
	bin := qemuIO(t)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed")
	}
	run := func(dir string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %q: %v: %s", name, args, err, out)
		}
		return string(out)
	}
	for _, c := range []struct {
		name    string
		backing bool // t.img over b.img (0x11 at 0 and 256k, zero at 512k)
		compat  string
		args    []string
	}{
		{name: "no-backing", args: cmds("write -z 0 64k", "write -z 132k 4k", "write -z 1020k 4k", "write -z -u 300k 200k", "write -z 0 0")},
		{name: "zero-alloc", args: cmds("write -P 1 0 320k", "write -z 0 64k", "write -z 128k 64k", "write -z -u 64k 64k", "write -z 200k 2k",
			"write -z -u 256k 4k", "read -P 1 192k 8k")},
		{name: "backing", backing: true, args: cmds("write -z 4k 4k", "write -z 68k 4k", "write -z 516k 4k", "write -z 256k 64k", "write -z 900k 100k",
			"read -P 0x11 0 4k", "read -P 0 4k 4k", "read -P 0x11 8k 56k")},
		{name: "v2", compat: "0.10", backing: true, args: cmds("write -P 1 640k 64k", "write -z 4k 4k", "write -z 640k 64k", "write -z -u 256k 64k")},
	} {
		t.Run(c.name, func(t *testing.T) {
			var outs, maps [2]string
			var imgs [2]string
			for j := range outs {
				dir := t.TempDir()
				opts := "compat=1.1"
				if c.compat != "" {
					opts = "compat=" + c.compat
				}
				if c.backing {
					run(dir, qemuImg, "create", "-q", "-f", "qcow2", "-o", opts, "b.img", "1M")
					run(dir, bin, "-c", "write -P 0x11 0 64k", "-c", "write -P 0x11 256k 64k", "-c", "write -z 512k 64k", "b.img")
					run(dir, qemuImg, "create", "-q", "-f", "qcow2", "-o", opts, "-b", "b.img", "-F", "qcow2", "t.img", "1M")
				} else {
					run(dir, qemuImg, "create", "-q", "-f", "qcow2", "-o", opts, "t.img", "1M")
				}
				img := filepath.Join(dir, "t.img")
				args := append(append([]string{}, c.args...), img)
				var out, errOut string
				var code int
				if j == 0 {
					out, errOut, code = runQemuIO(t, bin, "", args...)
				} else {
					out, errOut, code = ioRun(args, "")
				}
				if code != 0 || errOut != "" || strings.Contains(out, "fail") {
					t.Fatalf("tool %d: exit %d: %s%s", j, code, out, errOut)
				}
				outs[j] = normalize(out)
				maps[j] = run(dir, qemuImg, "map", "--output=json", img)
				imgs[j] = img
			}
			if outs[0] != outs[1] {
				t.Errorf("output differs:\nqemu-io:\n%s\nminivmm io:\n%s", outs[0], outs[1])
			}
			if maps[0] != maps[1] {
				t.Errorf("map differs:\nqemu-io's image:\n%s\nminivmm io's:\n%s", maps[0], maps[1])
			}
			run("/", qemuImg, "compare", imgs[0], imgs[1])
			// Without the backing file, what the zero writes marked
			// reads as zeroes still.
			for _, img := range imgs {
				run("/", qemuImg, "rebase", "-u", "-b", "", img)
			}
			run("/", qemuImg, "compare", imgs[0], imgs[1])
		})
	}
}

// TestOpenDiscardDifferential: qemu-io's open command discards by
// default (discard=unmap, as the command line), -d ignore keeps the data
// (iotest 177 discards through "open -o driver=blkdebug,...").
func TestOpenDiscardDifferential(t *testing.T) {
	fdtest.Check(t)
	bin := qemuIO(t)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed")
	}
	for _, open := range []string{"open IMG", "open -d ignore IMG", "open -d unmap IMG", "open -o driver=blkdebug,image.driver=qcow2 blkdebug::IMG",
		"open -o driver=blkdebug,image.driver=qcow2 IMG"} {
		var outs [2]string
		var imgs [2]string
		for j := range outs {
			img := filepath.Join(t.TempDir(), "t.img")
			if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", img, "1M").CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create: %v: %s", err, out)
			}
			args := cmds(strings.ReplaceAll(open, "IMG", img), "write -P 1 0 256k", "discard 0 64k", "discard 65537 128k", "read -P 0 0 64k", "read -P 1 64k 64k")
			var out, errOut string
			var code int
			if j == 0 {
				out, errOut, code = runQemuIO(t, bin, "", args...)
			} else {
				out, errOut, code = ioRun(args, "")
			}
			outs[j] = normalize(out) + errOut + strconv.Itoa(code)
			imgs[j] = img
		}
		if outs[0] != outs[1] {
			t.Errorf("%s: output differs:\nqemu-io:\n%s\nminivmm io:\n%s", open, outs[0], outs[1])
		}
		if out, err := exec.Command(qemuImg, "compare", imgs[0], imgs[1]).CombinedOutput(); err != nil {
			t.Errorf("%s: images differ: %v: %s", open, err, out)
		}
	}
}

// TestBlkdebugZeroLimitsDifferential: with opt-write-zero, QEMU cuts a
// zero write through blkdebug at that alignment and writes the pieces
// shorter than it as zeroed data (iotests 177, 204): the same images.
func TestBlkdebugZeroLimitsDifferential(t *testing.T) {
	fdtest.Check(t)
	bin := qemuIO(t)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed")
	}
	for _, limits := range []string{
		"align=512,max-transfer=64k,opt-write-zero=192k",
		"align=4k,opt-write-zero=192k,max-write-zero=384k",
		"align=512,opt-write-zero=1M,max-write-zero=1M",
	} {
		var outs, maps [2]string
		for j := range outs {
			dir := t.TempDir()
			img := filepath.Join(dir, "t.img")
			if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", img, "4M").CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create: %v: %s", err, out)
			}
			args := cmds("open -o driver=blkdebug,image.driver=qcow2,"+limits+" blkdebug::"+img,
				"write -z 100k 1M", "write -z 2M 900k", "write -z 3900k 196k", "read -P 0 0 4M")
			var out, errOut string
			var code int
			if j == 0 {
				out, errOut, code = runQemuIO(t, bin, "", args...)
			} else {
				out, errOut, code = ioRun(args, "")
			}
			outs[j] = normalize(out) + errOut + strconv.Itoa(code)
			m, err := exec.Command(qemuImg, "map", "--output=json", img).CombinedOutput()
			if err != nil {
				t.Fatalf("qemu-img map: %v: %s", err, m)
			}
			maps[j] = string(m)
		}
		if outs[0] != outs[1] {
			t.Errorf("%s: output differs:\nqemu-io:\n%s\nminivmm io:\n%s", limits, outs[0], outs[1])
		}
		if maps[0] != maps[1] {
			t.Errorf("%s: map differs:\nqemu-io's image:\n%s\nminivmm io's:\n%s", limits, maps[0], maps[1])
		}
	}
}

// TestHostDeviceDifferential: the host_device and host_cdrom drivers take
// character and block devices and refuse the rest as QEMU's do (iotest
// 226), and file refuses devices that are not block devices.
func TestHostDeviceDifferential(t *testing.T) {
	fdtest.Check(t)
	bin := qemuIO(t)
	dir := t.TempDir()
	for _, drv := range []string{"file", "host_device", "host_cdrom"} {
		for _, open := range []string{"open -r -o driver=D,filename=DIR", "open -o driver=D,filename=DIR",
			"open -r -o driver=D,filename=/dev/null,locking=off", "open -o driver=D,filename=/dev/null,locking=off"} {
			args := cmds(strings.NewReplacer("D", drv, "DIR", dir).Replace(open))
			qo, qe, qc := runQemuIO(t, bin, "", args...)
			mo, me, mc := ioRun(args, "")
			if qo != mo || qe != me || qc != mc {
				t.Errorf("%q:\nqemu-io (%d): %q %q\nminivmm (%d): %q %q", args, qc, qo, qe, mc, mo, me)
			}
		}
	}
}
