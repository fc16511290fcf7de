package vhostuser_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/internal/fdtest"
	"minivmm/internal/linuxguest"
	"minivmm/qemuopen"
	"minivmm/vm/vhostuser"
)

func qemuTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// fdsetGraph opens path as libvirt hands an image over: an O_RDONLY and an
// O_RDWR fd in fdset 1, the nodes opened on /dev/fdset/1 with nothing
// else allowed.
func fdsetGraph(t *testing.T, format, path string) *block.Graph {
	t.Helper()
	reg := qemuopen.New(qemuopen.Config{FdsetOnly: true})
	set := int64(1)
	for _, fl := range []int{unix.O_RDONLY, unix.O_RDWR} {
		fd, err := unix.Open(path, fl|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := reg.AddFd(fd, qemuopen.AddRequest{SetID: &set, Owner: qemuopen.CommandLine}); err != nil {
			t.Fatal(err)
		}
	}
	g := block.NewGraph(reg)
	if _, err := g.AddRoot(block.Options{"driver": "file", "node-name": "f", "filename": "/dev/fdset/1", "discard": "unmap"}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.AddRoot(block.Options{"driver": format, "node-name": "d", "file": "f", "discard": "unmap"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close(); reg.CloseAll() })
	return g
}

// TestLinuxGuest boots a real Linux guest on the export of a raw and a
// qcow2 image opened through fdsets: it reads what the host wrote, writes
// patterns with O_DIRECT and reads them back, and discards; the image
// afterwards holds what the guest printed (qemu-io), passes qemu-img
// check, and the discarded range is a hole.
func TestLinuxGuest(t *testing.T) {
	kit := linuxguest.Need(t)
	for _, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := filepath.Join(dir, "disk."+format)
			qemuTool(t, "qemu-img", "create", "-q", "-f", format, img, "64M")
			host := linuxguest.Pattern{Offset: 8 << 20, Len: 1 << 20, Byte: 0x11}
			qemuTool(t, "qemu-io", "-f", format, "-c", fmt.Sprintf("write -P 0x11 %d %d", host.Offset, host.Len), img)
			writes := []linuxguest.Pattern{
				{Offset: 0, Len: 1 << 20, Byte: 0xa5},
				{Offset: 4 << 20, Len: 2 << 20, Byte: 0x3c},
				{Offset: 12 << 20, Len: 1 << 20, Byte: 0x77},
			}
			discards := []linuxguest.Pattern{{Offset: 12 << 20, Len: 1 << 20}}

			g := fdsetGraph(t, format, img)
			x := vhostuser.NewExports(g, t.Logf)
			sock := filepath.Join(dir, "vu.sock")
			if err := x.Add(vhostuser.ExportOptions{ID: "e", NodeName: "d", Path: sock, Writable: true, NumQueues: 1, LogicalBlockSize: 512}); err != nil {
				t.Fatal(err)
			}
			script := linuxguest.ReadLine("HOST", host.Offset, host.Len) + linuxguest.WriteScript(writes, discards)
			r, err := kit.Run(context.Background(), dir, script, linuxguest.Boot{Socket: sock})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: guest ran in %v", format, r.Elapsed)
			if r.Status != 0 {
				t.Fatalf("guest script exit %d:\n%s", r.Status, r.Console)
			}
			if got := r.Value("HOST"); got != host.Sum() {
				t.Errorf("guest read %s where the host wrote 0x11, want %s", got, host.Sum())
			}
			for _, m := range linuxguest.CheckSums(r, writes) {
				t.Error(m)
			}
			if err := x.CloseAll(); err != nil {
				t.Fatal(err)
			}
			if err := g.Close(); err != nil {
				t.Fatal(err)
			}
			g.Files().CloseAll()
			for _, p := range append([]linuxguest.Pattern{host}, writes[:2]...) {
				qemuTool(t, "qemu-io", "-f", format, "-c", fmt.Sprintf("read -P %d %d %d", p.Byte, p.Offset, p.Len), img)
			}
			qemuTool(t, "qemu-io", "-f", format, "-c", fmt.Sprintf("read -P 0 %d %d", discards[0].Offset, discards[0].Len), img)
			if format == "qcow2" {
				qemuTool(t, "qemu-img", "check", "-q", img)
			}
			var extents []struct {
				Start, Length int64
				Data          bool
			}
			if err := json.Unmarshal([]byte(qemuTool(t, "qemu-img", "map", "-f", format, "--output=json", img)), &extents); err != nil {
				t.Fatal(err)
			}
			d := discards[0]
			for _, e := range extents {
				if e.Start < d.Offset+d.Len && d.Offset < e.Start+e.Length && e.Data {
					t.Errorf("discarded range [%d, +%d) still holds data: extent %+v", d.Offset, d.Len, e)
				}
			}
		})
	}
}

// TestMain checks that the tests, some of which run in parallel, leave no
// fd open: those the front ends sent included.
func TestMain(m *testing.M) { os.Exit(fdtest.Main(m)) }

// TestLinuxGuestReadOnly: an export without writable=on is a read-only
// disk to the guest (VIRTIO_BLK_F_RO): the kernel marks it so, refuses
// writes, and reads what the image holds; the image is unchanged.
func TestLinuxGuestReadOnly(t *testing.T) {
	kit := linuxguest.Need(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
	host := linuxguest.Pattern{Offset: 1 << 20, Len: 1 << 20, Byte: 0x99}
	qemuTool(t, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -P 0x99 %d %d", host.Offset, host.Len), img)
	g := fdsetGraph(t, "qcow2", img)
	x := vhostuser.NewExports(g, t.Logf)
	defer x.CloseAll()
	sock := filepath.Join(dir, "vu.sock")
	if err := x.Add(vhostuser.ExportOptions{ID: "e", NodeName: "d", Path: sock, NumQueues: 1, LogicalBlockSize: 512}); err != nil {
		t.Fatal(err)
	}
	script := "echo RO $(cat /sys/block/vda/ro)\n" +
		"if dd if=/dev/zero of=/dev/vda bs=4096 count=1 seek=256 oflag=direct 2>/dev/null; then echo WRITE ok; else echo WRITE refused; fi\n" +
		linuxguest.ReadLine("HOST", host.Offset, host.Len)
	r, err := kit.Run(context.Background(), dir, script, linuxguest.Boot{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	if r.Value("RO") != "1" || r.Value("WRITE") != "refused" || r.Value("HOST") != host.Sum() {
		t.Errorf("read-only export: ro %q, write %q, read %q (want 1, refused, %s)\n%s",
			r.Value("RO"), r.Value("WRITE"), r.Value("HOST"), host.Sum(), r.Console)
	}
	x.CloseAll()
	g.Close()
	qemuTool(t, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("read -P 0x99 %d %d", host.Offset, host.Len), img)
}
