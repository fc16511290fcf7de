package vhostuser_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
	"minivmm/vm/guestmem"
	"minivmm/vm/vhostuser"
)

// TestHelperBackend is not a test: TestInflightResubmit runs the test
// binary with it as a back end process it can kill -9 (an export of
// $VU_NODE, JSON block options, on $VU_SOCK).
func TestHelperBackend(t *testing.T) {
	sock := os.Getenv("VU_SOCK")
	if sock == "" {
		t.Skip("a helper process of TestInflightResubmit")
	}
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	o := block.Options{"driver": "raw", "node-name": "d", "file": block.Options{"driver": "file", "filename": os.Getenv("VU_IMG")}}
	if os.Getenv("VU_HANG") != "" {
		o = block.Options{"driver": "null-co", "node-name": "d", "size": int64(1 << 20), "latency-ns": int64(time.Hour)}
	}
	if at := os.Getenv("VU_STALL"); at != "" {
		// Writes over byte offset $VU_STALL never complete.
		off, err := strconv.ParseInt(at, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.AddDriver(&block.Driver{Name: "stall", Format: true, Open: func(o *block.OpenContext) (block.Image, error) {
			return &stallWrites{file: o.Child("file"), at: off}, nil
		}}); err != nil {
			t.Fatal(err)
		}
		o["driver"] = "stall"
	}
	if _, err := g.AddRoot(o); err != nil {
		t.Fatal(err)
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	x := vhostuser.NewExports(g, logf)
	if err := x.Add(vhostuser.ExportOptions{ID: "e", NodeName: "d", Path: sock, Writable: true, NumQueues: 1, LogicalBlockSize: 512}); err != nil {
		t.Fatal(err)
	}
	select {}
}

// stallWrites passes everything to its file child but writes over one
// offset, which it holds for ever (until the process is killed), saying
// so on stderr.
type stallWrites struct {
	file *block.Node
	at   int64
	once sync.Once
}

func (w *stallWrites) ReadAt(p []byte, off int64) (int, error) { return w.file.ReadAt(p, off) }
func (w *stallWrites) WriteAt(p []byte, off int64) (int, error) {
	if off <= w.at && w.at < off+int64(len(p)) {
		w.once.Do(func() { fmt.Fprintln(os.Stderr, "STALLED") })
		select {}
	}
	return w.file.WriteAt(p, off)
}
func (w *stallWrites) Flush() error              { return w.file.Flush() }
func (w *stallWrites) Length() (int64, error)    { return w.file.Length(), nil }
func (w *stallWrites) Close() error              { return nil }
func (w *stallWrites) Truncate(size int64) error { return w.file.Truncate(size) }

func startHelper(t *testing.T, sock, img string, hang bool, env ...string) *exec.Cmd {
	return startHelperTo(t, os.Stderr, sock, img, hang, env...)
}

func startHelperTo(t *testing.T, stderr io.Writer, sock, img string, hang bool, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperBackend$", "-test.timeout=10m")
	cmd.Env = append(append(os.Environ(), "VU_SOCK="+sock, "VU_IMG="+img), env...)
	if hang {
		cmd.Env = append(cmd.Env, "VU_HANG=1")
	}
	cmd.Stderr = stderr
	os.Remove(sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			return cmd
		}
		if i > 1000 {
			t.Fatal("the helper back end did not listen")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// inflightRig is a queue of 16 with three requests laid out in guest
// memory: request i at descriptors 3i..3i+2.
type inflightRig struct {
	t   *testing.T
	mem *guestmem.Memory
}

const rigSize = 16

func (r *inflightRig) slice(gpa, n uint64) []byte {
	b, err := r.mem.Slice(gpa, n)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

// add puts request i (typ at sector, 4 KiB of fill for a write) on the
// ring at avail position pos.
func (r *inflightRig) add(i int, typ uint32, sector uint64, fill byte, pos uint16) {
	le := binary.LittleEndian
	hdr := r.slice(hdrGPA+uint64(16*i), 16)
	le.PutUint32(hdr, typ)
	le.PutUint64(hdr[8:], sector)
	data := dataGPA + uint64(4096*i)
	copy(r.slice(data, 4096), bytes.Repeat([]byte{fill}, 4096))
	r.slice(statusGPA+uint64(i), 1)[0] = 0xff
	desc := r.slice(descGPA, 16*rigSize)
	put := func(d int, addr uint64, l uint32, flags, next uint16) {
		e := desc[16*d:]
		le.PutUint64(e, addr)
		le.PutUint32(e[8:], l)
		le.PutUint16(e[12:], flags)
		le.PutUint16(e[14:], next)
	}
	if typ == 4 { // flush: header and status
		put(3*i, hdrGPA+uint64(16*i), 16, 1, uint16(3*i+2))
	} else {
		put(3*i, hdrGPA+uint64(16*i), 16, 1, uint16(3*i+1))
		put(3*i+1, data, 4096, 1, uint16(3*i+2))
	}
	put(3*i+2, statusGPA+uint64(i), 1, 2, 0)
	avail := r.slice(availGPA, 4+2*rigSize)
	le.PutUint16(avail[4+2*int(pos%rigSize):], uint16(3*i))
	le.PutUint16(avail[2:], pos+1)
}

func (r *inflightRig) usedIdx() uint16 { return binary.LittleEndian.Uint16(r.slice(usedGPA+2, 2)) }

func (r *inflightRig) waitUsed(n uint16) {
	for deadline := time.Now().Add(10 * time.Second); r.usedIdx() != n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("used index %d, want %d", r.usedIdx(), n)
		}
	}
}

func (r *inflightRig) usedHeads() []uint16 {
	var hs []uint16
	for k := range r.usedIdx() {
		hs = append(hs, uint16(binary.LittleEndian.Uint32(r.slice(usedGPA+4+8*uint64(k%rigSize), 4))))
	}
	return hs
}

func connectInflight(t *testing.T, sock string, mem *guestmem.Memory, fd int) *vhostuser.Frontend {
	fe, err := vhostuser.DialInflight(sock, mem, fd)
	// The socket file appears at bind, a moment before listen: a dial
	// in between is refused (seen under load), so it is tried again.
	for deadline := time.Now().Add(5 * time.Second); errors.Is(err, unix.ECONNREFUSED) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		fe, err = vhostuser.DialInflight(sock, mem, fd)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := fe.SetFeatures(1<<32 | 1<<9); err != nil {
		t.Fatal(err)
	}
	if err := fe.SetupQueue(0, rigSize, descGPA, availGPA, usedGPA); err != nil {
		t.Fatal(err)
	}
	if err := fe.Start(); err != nil {
		t.Fatal(err)
	}
	return fe
}

// TestInflightResubmit: a back end killed with requests in flight, some
// completed out of order before, is replaced by another on the same
// socket; the front end hands it the inflight file it kept, and the new
// back end serves exactly the requests the dead one had not completed,
// in the order it took them, and then the ring's next.
func TestInflightResubmit(t *testing.T) {
	fdtest.Check(t)
	dir := t.TempDir()
	sock, img := filepath.Join(dir, "vu.sock"), filepath.Join(dir, "d.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	mem, err := guestmem.NewMemfd("inflight", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	r := &inflightRig{t: t, mem: mem}

	// A back end whose writes never complete: A (write), B (flush,
	// completes at once), C (write).
	dead := startHelper(t, sock, img, true)
	fe := connectInflight(t, sock, mem, -1)
	r.add(0, 1, 0, 0xa1, 0)
	r.add(1, 4, 0, 0, 1)
	r.add(2, 1, 8, 0xc3, 2)
	fe.Kick(0)
	r.waitUsed(1)
	if h := r.usedHeads(); h[0] != 3 {
		t.Fatalf("used %v, want the flush (head 3) first", h)
	}
	time.Sleep(50 * time.Millisecond) // A and C are taken and stuck
	dead.Process.Kill()
	dead.Wait()
	fd, err := unix.FcntlInt(uintptr(fe.InflightFd()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	fe.Close() // the connection is gone; this frees the eventfds
	// The file records A and C in flight, A first.
	region, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	desc := func(h int) []byte { return region[16+16*h : 32+16*h] }
	if le.Uint16(region[8:]) != 1 || le.Uint16(region[10:]) != rigSize || desc(0)[0] != 1 || desc(6)[0] != 1 || desc(3)[0] != 0 ||
		le.Uint64(desc(0)[8:]) >= le.Uint64(desc(6)[8:]) {
		t.Fatalf("inflight region: version %d, %d entries, in flight A %d B %d C %d, counters A %d C %d",
			le.Uint16(region[8:]), le.Uint16(region[10:]), desc(0)[0], desc(3)[0], desc(6)[0], le.Uint64(desc(0)[8:]), le.Uint64(desc(6)[8:]))
	}
	unix.Munmap(region)

	// A back end on the image takes over: A and C are served, and D,
	// added after, too; nothing else.
	startHelper(t, sock, img, false)
	fe = connectInflight(t, sock, mem, fd)
	defer fe.Close()
	r.waitUsed(3)
	r.add(3, 1, 16, 0xd4, 3)
	fe.Kick(0)
	r.waitUsed(4)
	// A and C were taken again in order, but are served at once: they
	// may complete either way round.
	h := r.usedHeads()
	slices.Sort(h[1:3])
	if got, want := fmt.Sprint(h), fmt.Sprint([]uint16{3, 0, 6, 9}); got != want {
		t.Fatalf("used heads %s, want %s (A and C in either order)", got, want)
	}
	for i := range 4 {
		if st := r.slice(statusGPA+uint64(i), 1)[0]; st != 0 {
			t.Fatalf("request %d: status %d", i, st)
		}
	}
	fe.Close()
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		off  int
		fill byte
	}{{0, 0xa1}, {8 * 512, 0xc3}, {16 * 512, 0xd4}} {
		if !bytes.Equal(got[c.off:c.off+4096], bytes.Repeat([]byte{c.fill}, 4096)) {
			t.Errorf("image at %d does not hold 0x%x", c.off, c.fill)
		}
	}
}
