package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"minivmm/internal/fdtest"
	"minivmm/internal/linuxguest"
	"minivmm/internal/qmptest"
)

// exportVMM starts minivmm as a management layer would for an image it
// opened itself: an O_RDONLY and an O_RDWR fd in fdset 1, the nodes on
// /dev/fdset/1 (discard=unmap, so the guest's discards reach the image),
// and a writable vhost-user-blk export of the format node.
func exportVMM(t *testing.T, format, img, sock string) *qmptest.Process {
	t.Helper()
	var files []*os.File
	for _, fl := range []int{os.O_RDONLY, os.O_RDWR} {
		f, err := os.OpenFile(img, fl, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	return startVMM(t, files, "-fdset-only", "-add-fd", "fd=3,set=1", "-add-fd", "fd=4,set=1",
		"-blockdev", "driver=file,node-name=f,filename=/dev/fdset/1,discard=unmap",
		"-blockdev", "driver="+format+",node-name=d,file=f,discard=unmap",
		"-export", "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path="+sock+",writable=on")
}

// waitFds waits for process pid to hold want fds.
func waitFds(t *testing.T, pid, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := fdtest.CountOf(pid)
		if err != nil {
			t.Fatal(err)
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: minivmm holds %d fds, want %d: %v", what, n, want, childFds(t, pid))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runGuest(t *testing.T, kit *linuxguest.Kit, sock, script string, b linuxguest.Boot) *linuxguest.Result {
	t.Helper()
	b.Socket = sock
	r, err := kit.Run(context.Background(), t.TempDir(), script, b)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != 0 {
		t.Fatalf("guest script exit %d:\n%s", r.Status, r.Console)
	}
	return r
}

// TestExportLinuxGuest: a real Linux guest (QEMU's vhost-user-blk-pci
// driving the kernel's virtio_blk) on minivmm's export of a raw and a
// qcow2 image passed as fds. The guest reads what the host wrote, writes
// patterns with O_DIRECT and reads them back, and discards; afterwards
// the image holds what it printed (qemu-io), passes qemu-img check, and
// the discarded range holds no data. Every fd the front end sent is
// closed once it went away; the export holds its node like a device
// (blockdev-del refused) until block-export-del, which sends
// BLOCK_EXPORT_DELETED.
func TestExportLinuxGuest(t *testing.T) {
	kit := linuxguest.Need(t)
	needTools(t, "qemu-img", "qemu-io")
	for _, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img, sock := filepath.Join(dir, "disk."+format), filepath.Join(dir, "vu.sock")
			mustRun(t, "qemu-img", "create", "-q", "-f", format, img, "64M")
			host := linuxguest.Pattern{Offset: 8 << 20, Len: 1 << 20, Byte: 0x11}
			mustRun(t, "qemu-io", "-f", format, "-c", fmt.Sprintf("write -P 0x11 %d %d", host.Offset, host.Len), img)
			writes := []linuxguest.Pattern{
				{Offset: 0, Len: 1 << 20, Byte: 0xa5},
				{Offset: 4 << 20, Len: 2 << 20, Byte: 0x3c},
				{Offset: 12 << 20, Len: 1 << 20, Byte: 0x77},
			}
			discard := linuxguest.Pattern{Offset: 12 << 20, Len: 1 << 20}

			p := exportVMM(t, format, img, sock)
			idle, err := fdtest.CountOf(p.Pid)
			if err != nil {
				t.Fatal(err)
			}
			script := "echo CACHE $(cat /sys/block/vda/queue/write_cache | tr ' ' -)\n" +
				linuxguest.ReadLine("HOST", host.Offset, host.Len) +
				linuxguest.WriteScript(writes, []linuxguest.Pattern{discard})
			r := runGuest(t, kit, sock, script, linuxguest.Boot{})
			t.Logf("%s: guest ran in %v", format, r.Elapsed)
			// A write cache the guest flushes, unlike qemu-storage-
			// daemon's export, which says write through and is not.
			if got := r.Value("CACHE"); got != "write-back" {
				t.Errorf("the guest sees its disk's write cache as %q, want write-back", got)
			}
			if got := r.Value("HOST"); got != host.Sum() {
				t.Errorf("guest read %s where the host wrote 0x11, want %s", got, host.Sum())
			}
			for _, m := range linuxguest.CheckSums(r, writes) {
				t.Error(m)
			}
			waitFds(t, p.Pid, idle, "after the front end exited")

			c := qmptest.Dial(t, p.Sock)
			defer c.Close()
			c.Negotiate()
			want := []any{map[string]any{"id": "e", "type": "vhost-user-blk", "node-name": "d", "shutting-down": false}}
			if got := ret(t, c.Execute("query-block-exports", nil)); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("query-block-exports = %v, want %v", got, want)
			}
			if d := errDesc(t, c.Execute("blockdev-del", map[string]any{"node-name": "d"})); d != "Node d is in use" {
				t.Errorf("blockdev-del of the exported node: %q", d)
			}
			if r := c.Execute("block-export-del", map[string]any{"id": "e"}); r["error"] != nil {
				t.Fatalf("block-export-del: %v", r)
			}
			if ev := c.Event("BLOCK_EXPORT_DELETED", 5*time.Second); fmt.Sprint(ev["data"]) != "map[id:e]" {
				t.Errorf("BLOCK_EXPORT_DELETED data %v", ev["data"])
			}
			for _, n := range []string{"d", "f"} {
				if r := c.Execute("blockdev-del", map[string]any{"node-name": n}); r["error"] != nil {
					t.Fatalf("blockdev-del %s after block-export-del: %v", n, r)
				}
			}
			c.Execute("quit", nil)
			if code := p.Wait(10 * time.Second); code != 0 {
				t.Fatalf("minivmm exit %d: %s", code, p.Output())
			}

			for _, p := range append([]linuxguest.Pattern{host}, writes[:2]...) {
				mustRun(t, "qemu-io", "-f", format, "-c", fmt.Sprintf("read -P %d %d %d", p.Byte, p.Offset, p.Len), img)
			}
			mustRun(t, "qemu-io", "-f", format, "-c", fmt.Sprintf("read -P 0 %d %d", discard.Offset, discard.Len), img)
			if format == "qcow2" {
				mustRun(t, "qemu-img", "check", "-q", img)
			}
			checkHole(t, format, img, discard)
		})
	}
}

// checkHole fails unless qemu-img map shows no data in p's range.
func checkHole(t *testing.T, format, img string, p linuxguest.Pattern) {
	t.Helper()
	out, err := exec.Command("qemu-img", "map", "-f", format, "--output=json", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	var extents []struct {
		Start, Length int64
		Data          bool
	}
	if err := json.Unmarshal(out, &extents); err != nil {
		t.Fatal(err)
	}
	for _, e := range extents {
		if e.Start < p.Offset+p.Len && p.Offset < e.Start+e.Length && e.Data {
			t.Errorf("discarded range [%d, +%d) still holds data: extent %+v", p.Offset, p.Len, e)
		}
	}
}

// consoleWatch signals when the console shows a line.
type consoleWatch struct {
	mu   sync.Mutex
	buf  strings.Builder
	word string
	seen chan struct{}
	once sync.Once
}

func (w *consoleWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.word) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

// TestExportFrontEndKilled: QEMU killed with SIGKILL while its guest
// writes leaves the export usable: the requests in flight complete, every
// fd the front end sent is closed, and the next front end's guest writes
// and reads back; what it flushed survives minivmm's own SIGKILL, and the
// image stays clean.
func TestExportFrontEndKilled(t *testing.T) {
	kit := linuxguest.Need(t)
	needTools(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	img, sock := filepath.Join(dir, "disk.qcow2"), filepath.Join(dir, "vu.sock")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
	p := exportVMM(t, "qcow2", img, sock)
	idle, err := fdtest.CountOf(p.Pid)
	if err != nil {
		t.Fatal(err)
	}

	// The guest writes until it is killed: 4 KiB O_DIRECT writes all
	// over the disk, each a request.
	busy := "echo WRITING\nwhile true; do\n" +
		"  for i in $(seq 0 4095); do dd if=/dev/zero of=/dev/vda bs=4096 count=1 seek=$((i*3)) oflag=direct 2>/dev/null; done\n" +
		"done\n"
	watch := &consoleWatch{word: "WRITING", seen: make(chan struct{})}
	killed := make(chan struct{})
	_, err = kit.Run(context.Background(), t.TempDir(), busy, linuxguest.Boot{Socket: sock, Console: watch,
		Started: func(qemu *os.Process) {
			go func() {
				defer close(killed)
				select {
				case <-watch.seen:
					time.Sleep(500 * time.Millisecond)
				case <-time.After(40 * time.Second):
				}
				qemu.Signal(syscall.SIGKILL)
			}()
		}})
	<-killed
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("the front end was not killed mid-run: %v", err)
	}
	select {
	case <-watch.seen:
	default:
		t.Fatal("the guest never started writing")
	}
	waitFds(t, p.Pid, idle, "after the front end was killed")

	writes := []linuxguest.Pattern{{Offset: 1 << 20, Len: 1 << 20, Byte: 0x5e}}
	r := runGuest(t, kit, sock, linuxguest.WriteScript(writes, nil), linuxguest.Boot{})
	for _, m := range linuxguest.CheckSums(r, writes) {
		t.Error(m)
	}
	waitFds(t, p.Pid, idle, "after the second front end exited")
	// The guest flushed (the export offers a write cache, and the guest
	// syncs): what it wrote is in the image even if minivmm dies without
	// closing it. qemu-storage-daemon's export tells the guest its cache
	// is off, so the guest never flushes and qcow2 metadata it held is
	// lost with it.
	p.Signal(syscall.SIGKILL)
	p.Wait(10 * time.Second)
	mustRun(t, "qemu-io", "-f", "qcow2", "-c", "read -P 0x5e 1M 1M", img)
	mustRun(t, "qemu-img", "check", "-q", img)
}

// TestExportReconnect: QEMU with -chardev ...,reconnect=1 reconnects to
// an export that went away under a running guest (block-export-del
// mode=hard, then block-export-add on the same socket), sets the rings up
// again where they stood, and the guest's IO carries on.
func TestExportReconnect(t *testing.T) {
	kit := linuxguest.Need(t)
	needTools(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	img, sock := filepath.Join(dir, "disk.qcow2"), filepath.Join(dir, "vu.sock")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
	p := exportVMM(t, "qcow2", img, sock)
	c := qmptest.Dial(t, p.Sock)
	defer c.Close()
	c.Negotiate()
	idle, err := fdtest.CountOf(p.Pid)
	if err != nil {
		t.Fatal(err)
	}

	first := []linuxguest.Pattern{{Offset: 0, Len: 1 << 20, Byte: 0x21}}
	second := []linuxguest.Pattern{{Offset: 2 << 20, Len: 1 << 20, Byte: 0x42}}
	script := linuxguest.WriteScript(first, nil) + "echo PHASE1\nsleep 5\n" +
		strings.Replace(linuxguest.WriteScript(second, nil), "SUM 0", "SUM 1", -1)
	watch := &consoleWatch{word: "PHASE1", seen: make(chan struct{})}
	swapped := make(chan error, 1)
	go func() {
		select {
		case <-watch.seen:
		case <-time.After(60 * time.Second):
			swapped <- fmt.Errorf("the guest never reached PHASE1")
			return
		}
		if r := c.Execute("block-export-del", map[string]any{"id": "e", "mode": "hard"}); r["error"] != nil {
			swapped <- fmt.Errorf("block-export-del: %v", r)
			return
		}
		c.Event("BLOCK_EXPORT_DELETED", 5*time.Second)
		r := c.Execute("block-export-add", map[string]any{"type": "vhost-user-blk", "id": "e", "node-name": "d",
			"writable": true, "addr": map[string]any{"type": "unix", "path": sock}})
		if r["error"] != nil {
			swapped <- fmt.Errorf("block-export-add: %v", r)
			return
		}
		swapped <- nil
	}()
	r := runGuest(t, kit, sock, script, linuxguest.Boot{Reconnect: true, Console: watch, Timeout: 90 * time.Second})
	if err := <-swapped; err != nil {
		t.Fatal(err)
	}
	t.Logf("guest ran in %v", r.Elapsed)
	// CheckSums numbers patterns from 0; the second phase's are 1.
	for _, m := range linuxguest.CheckSums(r, append(first, second...)) {
		t.Error(m)
	}
	waitFds(t, p.Pid, idle, "after the front end exited")
	c.Execute("quit", nil)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("minivmm exit %d: %s", code, p.Output())
	}
	mustRun(t, "qemu-io", "-f", "qcow2", "-c", "read -P 0x21 0 1M", "-c", "read -P 0x42 2M 1M", img)
	mustRun(t, "qemu-img", "check", "-q", img)
}

// TestExportMultiqueue: with num-queues=2 on both sides and two vCPUs the
// guest's block layer has two hardware queues, and writes issued from
// each vCPU at once land and read back.
func TestExportMultiqueue(t *testing.T) {
	kit := linuxguest.Need(t)
	needTools(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	img, sock := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "vu.sock")
	mustRun(t, "qemu-img", "create", "-q", "-f", "raw", img, "64M")
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := startVMM(t, []*os.File{f}, "-add-fd", "fd=3,set=1",
		"-blockdev", "driver=file,node-name=d,filename=/dev/fdset/1",
		"-export", "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path="+sock+",writable=on,num-queues=2")
	writes := []linuxguest.Pattern{{Offset: 0, Len: 2 << 20, Byte: 0x61}, {Offset: 8 << 20, Len: 2 << 20, Byte: 0x62}}
	var s strings.Builder
	s.WriteString("echo HWQ $(ls /sys/block/vda/mq | wc -l)\n")
	for i, w := range writes {
		fmt.Fprintf(&s, "dd if=/dev/zero bs=65536 count=%d 2>/dev/null | tr '\\000' '\\%03o' > /tmp/p%d\n", w.Len/65536, w.Byte, i)
	}
	for i, w := range writes {
		fmt.Fprintf(&s, "taskset -c %d dd if=/tmp/p%d of=/dev/vda bs=4096 seek=%d oflag=direct conv=fsync 2>/dev/null &\n", i, i, w.Offset/4096)
	}
	s.WriteString("wait\n")
	for i, w := range writes {
		fmt.Fprintf(&s, "echo SUM %d direct $(taskset -c %d dd if=/dev/vda bs=65536 skip=%d count=%d iflag=direct 2>/dev/null | md5sum)\n",
			i, 1-i, w.Offset/65536, w.Len/65536)
		fmt.Fprintf(&s, "echo SUM %d cached $(dd if=/dev/vda bs=65536 skip=%d count=%d 2>/dev/null | md5sum)\n",
			i, w.Offset/65536, w.Len/65536)
	}
	r := runGuest(t, kit, sock, s.String(), linuxguest.Boot{NumQueues: 2, CPUs: 2})
	t.Logf("guest ran in %v", r.Elapsed)
	if got := r.Value("HWQ"); got != "2" {
		t.Errorf("the guest's disk has %s hardware queues, want 2", got)
	}
	for _, m := range linuxguest.CheckSums(r, writes) {
		t.Error(m)
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
	for _, w := range writes {
		mustRun(t, "qemu-io", "-f", "raw", "-c", fmt.Sprintf("read -P %d %d %d", w.Byte, w.Offset, w.Len), img)
	}
}
