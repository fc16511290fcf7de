package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"minivmm/internal/fdtest"
	"minivmm/internal/linuxguest"
	"minivmm/internal/qmptest"
)

// kernelWrite is a run of one byte the guest writes to an NBD device.
type kernelWrite struct {
	off, len int64
	b        byte
	bs       int64 // dd block size; off and len are multiples of it
	direct   bool  // O_DIRECT, else through the page cache
}

func (w kernelWrite) data() []byte { return bytes.Repeat([]byte{w.b}, int(w.len)) }

// kernelRange is a byte range the guest discards.
type kernelRange struct{ off, len int64 }

const kernelImgSize = 16 << 20

var (
	// What the host writes into the writable images before the guest
	// reads them, and into the read-only one.
	kernelHostData = kernelWrite{off: 8 << 20, len: 1 << 20, b: 0x11}
	kernelROData   = kernelWrite{off: 1 << 20, len: 1 << 20, b: 0x5a}
	// The guest's writes: 64 KiB and 1 MiB O_DIRECT requests, single
	// 4 KiB ones, and a buffered write the kernel's writeback sends.
	kernelWrites = []kernelWrite{
		{off: 0, len: 1 << 20, b: 0xa5, bs: 64 << 10, direct: true},
		{off: 4 << 20, len: 2 << 20, b: 0x3c, bs: 1 << 20, direct: true},
		{off: 10 << 20, len: 1 << 20, b: 0x77, bs: 64 << 10, direct: true},
		{off: 12<<20 + 4096, len: 4096, b: 0xc1, bs: 4096, direct: true},
		{off: 12<<20 + 3*4096, len: 4096, b: 0xc3, bs: 4096, direct: true},
		{off: 14 << 20, len: 1 << 20, b: 0xe7, bs: 64 << 10},
	}
	// The third write's range, discarded afterwards.
	kernelDiscard = kernelRange{off: 10 << 20, len: 1 << 20}
)

// kernelExpected is what a writable device holds after the guest's script.
func kernelExpected() []byte {
	img := make([]byte, kernelImgSize)
	for _, w := range append([]kernelWrite{kernelHostData}, kernelWrites...) {
		copy(img[w.off:], w.data())
	}
	clear(img[kernelDiscard.off : kernelDiscard.off+kernelDiscard.len])
	return img
}

// kernelRWScript is the guest's IO on writable device dev (nbd0...):
// reads of what the host wrote, the writes and a flush (an fsync of the
// device), every write read back with O_DIRECT and through the page cache
// after dropping it, a discard and a flush, and the whole device's
// sha256. Lines: "tag dev index md5".
//
// With spread (a device with a connection per vCPU), the writes
// alternate between the two vCPUs, so between the kernel's two hardware
// queues and connections, with no flush of their own; the one flush
// after them goes out on the first: a server that offers
// NBD_FLAG_CAN_MULTI_CONN promises it covers the other connection's
// writes too.
func kernelRWScript(dev string, spread bool) string {
	var s strings.Builder
	p := "/dev/" + dev
	on := func(cpu int) string {
		if !spread {
			return ""
		}
		return fmt.Sprintf("taskset -c %d ", cpu%2)
	}
	fmt.Fprintf(&s, "echo HOST %s 0 $(dd if=%s bs=65536 skip=%d count=%d iflag=direct 2>/dev/null | md5sum)\n",
		dev, p, kernelHostData.off/65536, kernelHostData.len/65536)
	for i, w := range kernelWrites {
		flag := "oflag=direct conv=fsync"
		if spread {
			flag = "oflag=direct"
		}
		if !w.direct {
			flag = "conv=notrunc"
		}
		fmt.Fprintf(&s, "dd if=/dev/zero bs=%d count=%d 2>/dev/null | tr '\\000' '\\%03o' | "+
			"%sdd of=%s bs=%d seek=%d %s 2>/dev/null || echo WRITEFAIL %s 0\n",
			w.bs, w.len/w.bs, w.b, on(i), p, w.bs, w.off/w.bs, flag, dev)
	}
	// sync writes the page cache back; the fsync of dd conv=fsync
	// (blkdev_fsync) is what sends NBD_CMD_FLUSH.
	fsync := fmt.Sprintf("%sdd if=/dev/null of=%s conv=fsync,notrunc 2>/dev/null || echo FLUSHFAIL %s 0\n", on(0), p, dev)
	fmt.Fprintf(&s, "sync\nblockdev --flushbufs %s\n%secho 3 > /proc/sys/vm/drop_caches\n", p, fsync)
	for i, w := range kernelWrites {
		fmt.Fprintf(&s, "echo DIRECT %s %d $(%sdd if=%s bs=%d skip=%d count=%d iflag=direct 2>/dev/null | md5sum)\n",
			dev, i, on(i+1), p, w.bs, w.off/w.bs, w.len/w.bs)
		fmt.Fprintf(&s, "echo CACHED %s %d $(dd if=%s bs=%d skip=%d count=%d 2>/dev/null | md5sum)\n",
			dev, i, p, w.bs, w.off/w.bs, w.len/w.bs)
	}
	fmt.Fprintf(&s, "blkdiscard -o %d -l %d %s || echo DISCARDFAIL %s 0\n%s", kernelDiscard.off, kernelDiscard.len, p, dev, fsync)
	fmt.Fprintf(&s, "echo DISCARDED %s 0 $(dd if=%s bs=65536 skip=%d count=%d iflag=direct 2>/dev/null | md5sum)\n",
		dev, p, kernelDiscard.off/65536, kernelDiscard.len/65536)
	fmt.Fprintf(&s, "echo FULL %s 0 $(dd if=%s bs=1048576 iflag=direct 2>/dev/null | sha256sum)\n", dev, p)
	return s.String()
}

// kernelGuestScript connects the guest's nbd devices to minivmm's
// exports on port, runs the IO, and disconnects each; then it prints
// NBD-DISCONNECTED and idles a few seconds, so that the host can see the
// server let the connections go while the guest still runs. Last, it
// connects nbd4 and reads, and powers off with it connected: the client
// vanishes without NBD_CMD_DISC.
func kernelGuestScript(port int) string {
	var s strings.Builder
	fmt.Fprintf(&s, `connect() {
	nbdclient $3 %s:%d $2 /dev/$1 > /tmp/$1.log 2>&1 &
	echo $! > /tmp/$1.pid
	i=0
	while [ "$(cat /sys/block/$1/size)" = 0 ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
	echo DEV $1 0 size=$(cat /sys/block/$1/size) ro=$(cat /sys/block/$1/ro) cache=$(tr ' ' - < /sys/block/$1/queue/write_cache) discard=$(cat /sys/block/$1/queue/discard_max_bytes) lbs=$(cat /sys/block/$1/queue/logical_block_size) hwq=$(ls /sys/block/$1/mq | wc -l)
}
tryWrite() {
	echo WRITE $1 0 "$(dd if=/dev/zero of=/dev/$1 bs=4096 count=1 oflag=direct 2>&1 >/dev/null | head -n1)"
}
`, linuxguest.HostAddr, port)
	s.WriteString("echo UPTIME start 0 $(cut -d' ' -f1 /proc/uptime)\n")
	s.WriteString("connect nbd0 qcow2 '-C 2'\nconnect nbd1 raw\nconnect nbd2 ro\nconnect nbd3 ro -ignore-ro\n")
	s.WriteString("mount -t debugfs none /sys/kernel/debug\n")
	s.WriteString(kernelRWScript("nbd0", true))
	// How often each of nbd0's hardware queues (so connections) was run
	// to dispatch requests, from blk-mq's debugfs.
	s.WriteString("for q in 0 1; do echo RUN nbd0 $q $(cat /sys/kernel/debug/block/nbd0/hctx$q/run); done\n")
	s.WriteString(kernelRWScript("nbd1", false))
	for _, dev := range []string{"nbd2", "nbd3"} {
		fmt.Fprintf(&s, "echo RO %s 0 $(dd if=/dev/%s bs=65536 skip=%d count=%d iflag=direct 2>/dev/null | md5sum)\n",
			dev, dev, kernelROData.off/65536, kernelROData.len/65536)
		fmt.Fprintf(&s, "tryWrite %s\n", dev)
	}
	s.WriteString("dmesg | grep 'Other side returned error' | head -n1 | sed 's/^/KERNEL - 0 /'\n")
	for _, dev := range []string{"nbd0", "nbd1", "nbd2", "nbd3"} {
		fmt.Fprintf(&s, "nbdclient -d /dev/%[1]s || echo DISCFAIL %[1]s 0\nwait $(cat /tmp/%[1]s.pid)\necho CLIENT %[1]s 0 $?\n"+
			"sed 's/^/LOG %[1]s 0 /' /tmp/%[1]s.log\n", dev)
	}
	// The kernel's own account, for a failure's report.
	s.WriteString("dmesg | grep -E 'nbd[0-9]' | sed 's/^/DMESG - 0 /'\n")
	s.WriteString("echo UPTIME end 0 $(cut -d' ' -f1 /proc/uptime)\necho NBD-DISCONNECTED\nsleep 5\n")
	fmt.Fprintf(&s, "connect nbd4 raw\necho LATE nbd4 0 $(dd if=/dev/nbd4 bs=65536 skip=%d count=%d iflag=direct 2>/dev/null | md5sum)\n",
		kernelHostData.off/65536, kernelHostData.len/65536)
	s.WriteString("echo UPTIME late 0 $(cut -d' ' -f1 /proc/uptime)\n")
	return s.String()
}

// listenPort is the TCP port process pid listens on (its only listening
// inet socket): minivmm is started with addr.port=0, as no port can be
// reserved for it without a race.
func listenPort(t *testing.T, pid int) int {
	t.Helper()
	inodes := map[string]bool{}
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		// sl local_address rem_address st ... inode (the tenth field)
		if len(f) >= 10 && f[3] == "0A" && inodes[f[9]] {
			_, port, _ := strings.Cut(f[1], ":")
			n, err := strconv.ParseUint(port, 16, 16)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatalf("minivmm (pid %d) listens on no TCP port", pid)
	return 0
}

// guestValues maps "TAG dev index", the first three words of each of the
// script's lines, to the rest of the line (the first such line).
func guestValues(r *linuxguest.Result) map[string]string {
	m := map[string]string{}
	for _, l := range r.Lines {
		if f := strings.Fields(l); len(f) >= 3 {
			k := strings.Join(f[:3], " ")
			if _, ok := m[k]; !ok {
				m[k] = strings.Join(f[3:], " ")
			}
		}
	}
	return m
}

func md5hex(b []byte) string    { return fmt.Sprintf("%x", md5.Sum(b)) }
func sha256hex(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// TestNBDExportLinuxKernel: the Linux kernel's nbd driver as a client of
// minivmm's NBD export, in a real guest under QEMU (TCG) reaching
// minivmm's inet socket through QEMU's user network. A small static
// client written from the NBD spec (internal/linuxguest/nbdclient) does
// the handshake and hands the socket to the kernel, which does all the
// IO with simple replies: O_DIRECT and buffered writes of 4 KiB to 1 MiB,
// flushes, a discard, reads through and around the page cache, on a
// qcow2 and a raw export; a read-only export the kernel is told of
// (writes: EPERM in the guest) and one it is not (the server's NBD_EPERM
// reaches the guest as EIO). Every connection is gone from minivmm once
// the guest disconnected (NBD_DISCONNECT, so NBD_CMD_DISC), before the
// guest even powers off; afterwards the images hold what the guest saw
// (qemu-img compare with the expected contents), qcow2 passes qemu-img
// check, the discarded range is a hole, and the read-only image is as it
// was.
//
// The same runs against qemu-storage-daemon's exports of the same images,
// which validates the test (what the guest and the images show with the
// reference server) apart from minivmm.
func TestNBDExportLinuxKernel(t *testing.T) {
	t.Parallel()
	kit := linuxguest.Need(t)
	kit.NeedModules(t, "drivers/block/nbd.ko", "drivers/net/virtio_net.ko")
	needTools(t, "qemu-img", "qemu-io", "qemu-storage-daemon")
	start := time.Now()
	client, err := linuxguest.GoProgram(t.TempDir(), "minivmm/internal/linuxguest/nbdclient")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest's nbdclient built in %v", time.Since(start))
	for _, kind := range []string{"minivmm", "qemu-storage-daemon"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			kernelNBD(t, kit, client, kind)
		})
	}
}

// startKernelNBDServer serves the three images as the exports qcow2, raw
// (both writable) and ro: minivmm on fdsets as a management layer passes
// them, qemu-storage-daemon (which has no -add-fd in 7.2) on file names.
func startKernelNBDServer(t *testing.T, kind, dir, qcow, raw, ro string) *qmptest.Process {
	t.Helper()
	pidfile := filepath.Join(dir, "pid")
	exports := []string{
		"-nbd-server", "addr.type=inet,addr.host=127.0.0.1,addr.port=0",
		"-export", "type=nbd,id=e1,node-name=q1,name=qcow2,writable=on",
		"-export", "type=nbd,id=e2,node-name=f2,name=raw,writable=on",
		"-export", "type=nbd,id=e3,node-name=q3,name=ro",
		"-pidfile", pidfile,
	}
	var p *qmptest.Process
	if kind == "qemu-storage-daemon" {
		args := append([]string{
			"-blockdev", "driver=file,node-name=f1,filename=" + qcow + ",discard=unmap",
			"-blockdev", "driver=qcow2,node-name=q1,file=f1,discard=unmap",
			"-blockdev", "driver=file,node-name=f2,filename=" + raw + ",discard=unmap",
			"-blockdev", "driver=file,node-name=f3,filename=" + ro + ",read-only=on",
			"-blockdev", "driver=qcow2,node-name=q3,file=f3,read-only=on",
		}, exports...)
		for i := 0; i < len(args); i += 2 {
			args[i] = "-" + args[i] // --blockdev ...
		}
		p = qmptest.StartArgs(t, kind, nil, args...)
		for i := 0; ; i++ {
			if _, err := os.Stat(pidfile); err == nil {
				return p
			}
			if i > 1000 {
				t.Fatalf("%s did not start: %s", kind, p.Output())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The images as a management layer passes them: fdsets, with an
	// O_RDONLY and an O_RDWR fd for each writable one.
	var files []*os.File
	for _, o := range []struct {
		path string
		flag int
	}{{qcow, os.O_RDONLY}, {qcow, os.O_RDWR}, {raw, os.O_RDONLY}, {raw, os.O_RDWR}, {ro, os.O_RDONLY}} {
		f, err := os.OpenFile(o.path, o.flag, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	// minivmm has its copies once started; ours, closed on return, would
	// keep its image locks (OFD locks belong to the open file
	// description) past its SIGKILL.
	p = startVMM(t, files, append([]string{"-fdset-only",
		"-add-fd", "fd=3,set=1", "-add-fd", "fd=4,set=1", "-add-fd", "fd=5,set=2", "-add-fd", "fd=6,set=2", "-add-fd", "fd=7,set=3",
		"-blockdev", "driver=file,node-name=f1,filename=/dev/fdset/1,discard=unmap",
		"-blockdev", "driver=qcow2,node-name=q1,file=f1,discard=unmap",
		"-blockdev", "driver=file,node-name=f2,filename=/dev/fdset/2,discard=unmap",
		"-blockdev", "driver=file,node-name=f3,filename=/dev/fdset/3,read-only=on",
		"-blockdev", "driver=qcow2,node-name=q3,file=f3,read-only=on",
	}, exports...)...)
	if _, err := os.Stat(pidfile); err != nil {
		t.Fatalf("no pidfile once the monitor listens: %v", err)
	}
	return p
}

func kernelNBD(t *testing.T, kit *linuxguest.Kit, client []byte, kind string) {
	dir := t.TempDir()
	qcow, raw, ro := filepath.Join(dir, "rw.qcow2"), filepath.Join(dir, "rw.raw"), filepath.Join(dir, "ro.qcow2")
	for _, img := range []struct{ path, format string }{{qcow, "qcow2"}, {raw, "raw"}, {ro, "qcow2"}} {
		mustRun(t, "qemu-img", "create", "-q", "-f", img.format, img.path, strconv.Itoa(kernelImgSize))
		w := kernelHostData
		if img.path == ro {
			w = kernelROData
		}
		mustRun(t, "qemu-io", "-f", img.format, "-c", fmt.Sprintf("write -q -P %d %d %d", w.b, w.off, w.len), img.path)
	}
	roBefore, err := os.ReadFile(ro)
	if err != nil {
		t.Fatal(err)
	}

	p := startKernelNBDServer(t, kind, dir, qcow, raw, ro)
	port := listenPort(t, p.Pid)
	base := steadyFds(t, p.Pid)

	// Once the guest says it disconnected, minivmm must let go of every
	// connection while the guest still runs (it idles 5 s before it
	// connects nbd4): the kernel's NBD_CMD_DISC, not QEMU's exit, ends
	// them.
	watch := &consoleWatch{word: "NBD-DISCONNECTED", seen: make(chan struct{})}
	released := make(chan string, 1)
	guestGone := make(chan struct{})
	go func() {
		select {
		case <-watch.seen:
		case <-guestGone:
			released <- "the guest never disconnected"
			return
		}
		seen := time.Now()
		for {
			n, err := fdtest.CountOf(p.Pid)
			if err != nil {
				released <- err.Error()
				return
			}
			if n == base {
				released <- ""
				return
			}
			if time.Since(seen) > 4*time.Second {
				released <- fmt.Sprintf("%s still held %d fds (%d before the guest) 4 s after the guest's NBD_DISCONNECTs", kind, n, base)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	r, err := kit.Run(context.Background(), t.TempDir(), kernelGuestScript(port), linuxguest.Boot{
		Net:     true,
		Modules: []string{"drivers/block/nbd.ko"},
		CPUs:    2, // nbd0's two connections each get IO
		Files:   []linuxguest.File{{Name: "bin/nbdclient", Data: client}},
		Console: watch,
		Timeout: 4 * time.Minute,
	})
	close(guestGone)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest ran in %v", r.Elapsed)
	if r.Status != 0 {
		t.Fatalf("guest script exit %d:\n%s", r.Status, r.Console)
	}
	if msg := <-released; msg != "" {
		t.Error(msg)
	}
	v := guestValues(r)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf(format+"\nguest output:\n%s", append(args, strings.Join(r.Lines, "\n"))...)
	}

	// What the kernel made of each export.
	for dev, want := range map[string]string{
		"nbd0": "size=32768 ro=0 cache=write-back discard=",
		"nbd1": "size=32768 ro=0 cache=write-back discard=",
		// A read-only export offers no TRIM (as in QEMU), so the
		// kernel sends no discards even when not told it is read-only.
		"nbd2": "size=32768 ro=1 cache=write-back discard=0 ",
		"nbd3": "size=32768 ro=0 cache=write-back discard=0 ",
	} {
		got := v["DEV "+dev+" 0"]
		if !strings.HasPrefix(got, want) || strings.HasSuffix(want, "discard=") && strings.Contains(got, "discard=0 ") {
			fail("%s: %q, want %q... (with discards on writable exports)", dev, got, want)
		}
	}
	if got := v["DEV nbd0 0"]; !strings.HasSuffix(got, " hwq=2") {
		fail("nbd0 with two connections: %q, want two hardware queues", got)
	}
	t.Logf("the script's NBD part ran from %ss to %ss of the guest's uptime (nbd4 done at %ss); nbd0's queues ran %s and %s times",
		v["UPTIME start 0"], v["UPTIME end 0"], v["UPTIME late 0"], v["RUN nbd0 0"], v["RUN nbd0 1"])
	for q := range 2 {
		got := v[fmt.Sprintf("RUN nbd0 %d", q)]
		if n, err := strconv.Atoi(got); err != nil || n == 0 {
			fail("nbd0's hardware queue %d, so connection %d, ran %q times", q, q, got)
		}
	}
	expected := kernelExpected()
	for _, dev := range []string{"nbd0", "nbd1"} {
		if got, want := v["HOST "+dev+" 0"], md5hex(kernelHostData.data()); !strings.HasPrefix(got, want) {
			fail("%s read %q where the host wrote 0x11, want %s", dev, got, want)
		}
		for i, w := range kernelWrites {
			for _, how := range []string{"DIRECT", "CACHED"} {
				if got := v[fmt.Sprintf("%s %s %d", how, dev, i)]; !strings.HasPrefix(got, md5hex(w.data())) {
					fail("%s: write %d (%#x at %d, %d bytes) read back %s: %q, want %s", dev, i, w.b, w.off, w.len, how, got, md5hex(w.data()))
				}
			}
		}
		if got, want := v["DISCARDED "+dev+" 0"], md5hex(make([]byte, kernelDiscard.len)); !strings.HasPrefix(got, want) {
			fail("%s: discarded range read %q, want zeroes (%s)", dev, got, want)
		}
		if got, want := v["FULL "+dev+" 0"], sha256hex(expected); !strings.HasPrefix(got, want) {
			fail("%s: whole device sha256 %q, want %s", dev, got, want)
		}
		if _, ok := v["WRITEFAIL "+dev+" 0"]; ok {
			fail("%s: a write failed", dev)
		}
		if _, ok := v["DISCARDFAIL "+dev+" 0"]; ok {
			fail("%s: blkdiscard failed", dev)
		}
		if _, ok := v["FLUSHFAIL "+dev+" 0"]; ok {
			fail("%s: fsync failed", dev)
		}
	}
	if got, want := v["LATE nbd4 0"], md5hex(kernelHostData.data()); !strings.HasPrefix(got, want) {
		fail("nbd4, connected last, read %q, want %s", got, want)
	}
	for _, dev := range []string{"nbd2", "nbd3"} {
		if got, want := v["RO "+dev+" 0"], md5hex(kernelROData.data()); !strings.HasPrefix(got, want) {
			fail("%s read %q of the read-only export, want %s", dev, got, want)
		}
	}
	// The kernel refuses writes to a device it knows is read-only; told
	// nothing, it sends them, and the server's error is an I/O error.
	// minivmm's is NBD_EPERM, as the NBD spec says a server should reply
	// to a write on a read-only export; qemu-storage-daemon 7.2 replies
	// NBD_EINVAL to every request it refuses before handling it
	// (nbd_trip), this one included.
	wantErr := map[string]string{"minivmm": "1", "qemu-storage-daemon": "22"}[kind]
	if got := v["WRITE nbd2 0"]; !strings.Contains(got, "Operation not permitted") {
		fail("a write to the read-only device: %q, want EPERM", got)
	}
	if got := v["WRITE nbd3 0"]; !strings.Contains(got, "Input/output error") {
		fail("a write the read-only export refuses: %q, want EIO", got)
	}
	if got := v["KERNEL - 0"]; !strings.Contains(got, "Other side returned error ("+wantErr+")") {
		fail("the kernel's log of the refused write: %q, want the server's error %s", got, wantErr)
	}
	for _, dev := range []string{"nbd0", "nbd1", "nbd2", "nbd3"} {
		if _, ok := v["DISCFAIL "+dev+" 0"]; ok {
			fail("%s: NBD_DISCONNECT failed", dev)
		}
		if got := v["CLIENT "+dev+" 0"]; got != "0" {
			fail("%s: the client (NBD_DO_IT) exited %q after NBD_DISCONNECT, want 0", dev, got)
		}
	}

	settledFds(t, p.Pid, base, "the guest powered off with nbd4 connected (the server is "+kind+")")
	if kind == "minivmm" {
		c := qmptest.Dial(t, p.Sock)
		defer c.Close()
		c.Negotiate()
		if got := fmt.Sprint(ret(t, c.Execute("query-block-exports", nil))); strings.Count(got, "shutting-down:false") != 3 {
			t.Errorf("query-block-exports after the guest: %s", got)
		}
	}
	// Killed, not quit: the guest flushed after its writes and its
	// discard, so the image holds them even though minivmm never closes
	// it (qcow2 metadata included).
	p.Signal(syscall.SIGKILL)
	p.Wait(10 * time.Second)

	want := filepath.Join(dir, "expected.raw")
	if err := os.WriteFile(want, expected, 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", qcow, want)
	mustRun(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", raw, want)
	mustRun(t, "qemu-img", "check", "-q", qcow)
	mustRun(t, "qemu-img", "check", "-q", ro)
	lgDiscard := linuxguest.Pattern{Offset: kernelDiscard.off, Len: kernelDiscard.len}
	checkHole(t, "qcow2", qcow, lgDiscard)
	checkHole(t, "raw", raw, lgDiscard)
	if roAfter, err := os.ReadFile(ro); err != nil || !bytes.Equal(roAfter, roBefore) {
		t.Errorf("the read-only export's image changed (%v)", err)
	}
}

// TestNBDExportFlagsLikeQSD: what an export offers (the transmission
// flags, as nbdinfo reports them) is what qemu-storage-daemon's export of
// the same image offers, writable and read-only. The kernel's nbd driver
// takes these flags as they come: a read-only export offering TRIM had
// the guest's kernel enable discards on it (TestNBDExportLinuxKernel).
func TestNBDExportFlagsLikeQSD(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-storage-daemon", "nbdinfo")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.qcow2")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
	offers := func(kind string, writable bool) string {
		sock := filepath.Join(dir, fmt.Sprintf("%s-%v.sock", kind, writable))
		pid := sock + ".pid"
		ro, wr := ",read-only=on", ""
		if writable {
			ro, wr = "", ",writable=on"
		}
		args := []string{"-blockdev", "driver=file,node-name=f,filename=" + img + ro,
			"-blockdev", "driver=qcow2,node-name=q,file=f" + ro,
			"-nbd-server", "addr.type=unix,addr.path=" + sock,
			"-export", "type=nbd,id=e,node-name=q,name=d" + wr, "-pidfile", pid}
		var p *qmptest.Process
		if kind == "minivmm" {
			p = startVMM(t, nil, args...)
		} else {
			for i := 0; i < len(args); i += 2 {
				args[i] = "-" + args[i] // --blockdev ...
			}
			p = qmptest.StartArgs(t, kind, nil, args...)
		}
		defer func() { p.Signal(os.Interrupt); p.Wait(10 * time.Second) }()
		for i := 0; ; i++ {
			if _, err := os.Stat(pid); err == nil {
				break
			}
			if i > 1000 {
				t.Fatalf("%s did not start: %s", kind, p.Output())
			}
			time.Sleep(10 * time.Millisecond)
		}
		var lines []string
		for _, l := range strings.Split(output(t, "nbdinfo", "nbd+unix:///d?socket="+sock), "\n") {
			l = strings.TrimSpace(l)
			if strings.HasPrefix(l, "can_") || strings.HasPrefix(l, "is_read_only") {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, "\n")
	}
	for _, writable := range []bool{true, false} {
		want, got := offers("qemu-storage-daemon", writable), offers("minivmm", writable)
		if got != want {
			t.Errorf("writable=%v: minivmm's export offers\n%s\nqemu-storage-daemon's\n%s", writable, got, want)
		}
	}
}
