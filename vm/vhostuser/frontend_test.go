package vhostuser_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
	"minivmm/vm/guestmem"
	"minivmm/vm/vhostuser"
)

// ringDriver is the least of a virtio-blk driver: one split queue in
// guest memory, one request at a time, written from the spec (2.7, 5.2).
type ringDriver struct {
	t    testing.TB
	mem  *guestmem.Memory
	fe   *vhostuser.Frontend
	size uint16
	next uint16 // avail idx
}

const (
	descGPA, availGPA, usedGPA = 0x0, 0x1000, 0x2000
	hdrGPA, dataGPA, statusGPA = 0x10000, 0x11000, 0x30000
)

func (d *ringDriver) slice(gpa, n uint64) []byte {
	b, err := d.mem.Slice(gpa, n)
	if err != nil {
		d.t.Fatal(err)
	}
	return b
}

// do runs one request: typ at sector, n data bytes (written from data for
// OUT, read back for IN), and returns the status byte.
func (d *ringDriver) do(typ uint32, sector uint64, data []byte, n int) ([]byte, byte) {
	le := binary.LittleEndian
	hdr := d.slice(hdrGPA, 16)
	le.PutUint32(hdr, typ)
	le.PutUint32(hdr[4:], 0)
	le.PutUint64(hdr[8:], sector)
	copy(d.slice(dataGPA, uint64(n)), data)
	d.slice(statusGPA, 1)[0] = 0xff
	desc := d.slice(descGPA, 16*3)
	put := func(i int, addr uint64, l uint32, flags, next uint16) {
		e := desc[16*i:]
		le.PutUint64(e, addr)
		le.PutUint32(e[8:], l)
		le.PutUint16(e[12:], flags)
		le.PutUint16(e[14:], next)
	}
	const next, write = 1, 2
	dataFlags := uint16(next)
	if typ == 0 { // IN: the device writes the data
		dataFlags |= write
	}
	// header -> [data ->] status, at descriptors 0, 1, 2.
	if n > 0 {
		put(0, hdrGPA, 16, next, 1)
		put(1, dataGPA, uint32(n), dataFlags, 2)
	} else {
		put(0, hdrGPA, 16, next, 2)
	}
	put(2, statusGPA, 1, write, 0)
	avail := d.slice(availGPA, 4+2*uint64(d.size))
	le.PutUint16(avail[4+2*int(d.next%d.size):], 0) // the chain starts at descriptor 0
	d.next++
	le.PutUint16(avail[2:], d.next)
	d.fe.Kick(0)
	used := d.slice(usedGPA, 4+8*uint64(d.size))
	for deadline := time.Now().Add(10 * time.Second); le.Uint16(used[2:]) != d.next; {
		select {
		case <-d.fe.Interrupt(0):
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("request type %d not completed", typ)
		}
	}
	return append([]byte(nil), d.slice(dataGPA, uint64(n))...), d.slice(statusGPA, 1)[0]
}

// frontendRoundTrip drives a back end through the Go front end: write,
// read back, flush; then closes everything it opened.
func frontendRoundTrip(t *testing.T, sock string) {
	mem, err := guestmem.NewMemfd("frontend-test", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	fe, err := vhostuser.Dial(sock, mem)
	if err != nil {
		t.Fatal(err)
	}
	defer fe.Close()
	offered, err := fe.DeviceFeatures()
	if err != nil {
		t.Fatal(err)
	}
	const version1, flush = 1 << 32, 1 << 9
	if offered&version1 == 0 || offered&flush == 0 {
		t.Fatalf("features %#x lack VERSION_1 or FLUSH", offered)
	}
	if err := fe.SetFeatures(version1 | flush); err != nil {
		t.Fatal(err)
	}
	cfg, err := fe.Config()
	if err != nil {
		t.Fatal(err)
	}
	if capacity := binary.LittleEndian.Uint64(cfg); capacity != (1<<20)/512 {
		t.Errorf("capacity %d sectors, want %d", capacity, (1<<20)/512)
	}
	if fe.MaxQueueSize(0) < 16 || fe.MaxQueueSize(1) != 0 {
		t.Errorf("queue sizes %d, %d", fe.MaxQueueSize(0), fe.MaxQueueSize(1))
	}
	if err := fe.SetupQueue(0, 16, descGPA, availGPA, usedGPA); err != nil {
		t.Fatal(err)
	}
	if err := fe.Start(); err != nil {
		t.Fatal(err)
	}
	d := &ringDriver{t: t, mem: mem, fe: fe, size: 16}
	data := bytes.Repeat([]byte{0xc3}, 4096)
	if _, st := d.do(1, 8, data, len(data)); st != 0 {
		t.Fatalf("write status %d", st)
	}
	got, st := d.do(0, 8, make([]byte, 4096), 4096)
	if st != 0 || !bytes.Equal(got, data) {
		t.Fatalf("read status %d, data equal: %v", st, bytes.Equal(got, data))
	}
	if _, st := d.do(4, 0, nil, 0); st != 0 {
		t.Fatalf("flush status %d", st)
	}
	if err := fe.Close(); err != nil {
		t.Fatal(err)
	}
}

// backend starts an export of a raw image of size bytes on a unix socket:
// minivmm's (in this process) or qemu-storage-daemon's.
func backend(t testing.TB, kind string, size int64) (img, sock string) {
	t.Helper()
	if _, err := exec.LookPath("qemu-storage-daemon"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-storage-daemon not installed (CI=true)")
		}
		t.Skip("qemu-storage-daemon not installed; apt-get install qemu-system-x86")
	}
	dir := t.TempDir()
	img, sock = filepath.Join(dir, "d.raw"), filepath.Join(dir, "vu.sock")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "raw", img, fmt.Sprint(size)).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	if kind == "minivmm" {
		reg := qemuopen.New(qemuopen.Config{})
		g := block.NewGraph(reg)
		if _, err := g.AddRoot(block.Options{"driver": "file", "node-name": "d", "filename": img}); err != nil {
			t.Fatal(err)
		}
		x := vhostuser.NewExports(g, t.Logf)
		t.Cleanup(func() { x.CloseAll(); g.Close(); reg.CloseAll() })
		if err := x.Add(vhostuser.ExportOptions{ID: "e", NodeName: "d", Path: sock, Writable: true, NumQueues: 1, LogicalBlockSize: 512}); err != nil {
			t.Fatal(err)
		}
		return img, sock
	}
	qsd := exec.Command("qemu-storage-daemon", "--blockdev", "driver=file,node-name=d,filename="+img,
		"--export", "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path="+sock+",writable=on")
	if err := qsd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qsd.Process.Signal(os.Interrupt); qsd.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			return img, sock
		}
		if i > 500 {
			t.Fatal("qemu-storage-daemon did not listen")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFrontend drives minivmm's export and qemu-storage-daemon's with the
// same Go front end; each image then holds what was written (qemu-io).
func TestFrontend(t *testing.T) {
	fdtest.Check(t)
	for _, kind := range []string{"minivmm", "qemu-storage-daemon"} {
		t.Run(kind, func(t *testing.T) {
			img, sock := backend(t, kind, 1<<20)
			frontendRoundTrip(t, sock)
			qemuTool(t, "qemu-io", "-r", "-U", "-f", "raw", "-c", fmt.Sprintf("read -P 0xc3 %d 4096", 8*512), img)
		})
	}
}

// BenchmarkExport4K: 4 KiB random reads and writes at depth 1, one
// request at a time through the same Go front end and ring driver, on
// minivmm's export and qemu-storage-daemon's of the same kind of image
// (raw, host page cache). Compare the two in one run (benchstat).
func BenchmarkExport4K(b *testing.B) {
	const size = 64 << 20
	for _, kind := range []string{"minivmm", "qemu-storage-daemon"} {
		for _, op := range []string{"randread", "randwrite"} {
			b.Run(kind+"/"+op, func(b *testing.B) {
				_, sock := backend(b, kind, size)
				mem, err := guestmem.NewMemfd("bench", 1<<20)
				if err != nil {
					b.Fatal(err)
				}
				defer mem.Close()
				fe, err := vhostuser.Dial(sock, mem)
				if err != nil {
					b.Fatal(err)
				}
				defer fe.Close()
				// FLUSH, as Linux accepts it: without it a virtio-blk
				// device must write through (minivmm's does; QSD's
				// caches all the same).
				if err := fe.SetFeatures(1<<32 | 1<<9); err != nil {
					b.Fatal(err)
				}
				if err := fe.SetupQueue(0, 16, descGPA, availGPA, usedGPA); err != nil {
					b.Fatal(err)
				}
				if err := fe.Start(); err != nil {
					b.Fatal(err)
				}
				d := &ringDriver{t: b, mem: mem, fe: fe, size: 16}
				typ := uint32(0)
				if op == "randwrite" {
					typ = 1
				}
				buf := bytes.Repeat([]byte{0x5a}, 4096)
				seed := uint64(1)
				b.SetBytes(4096)
				b.ResetTimer()
				for range b.N {
					seed = seed*6364136223846793005 + 1442695040888963407
					sector := (seed >> 33) % (size / 4096) * 8
					if _, st := d.do(typ, sector, buf, 4096); st != 0 {
						b.Fatalf("status %d", st)
					}
				}
			})
		}
	}
}
