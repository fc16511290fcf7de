package virtioblk_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
	"minivmm/vm/guestmem"
	"minivmm/vm/virtioblk"
	"minivmm/vm/virtq"
	"minivmm/vm/virtq/virtqtest"
)

// needQemu skips without qemu-img and qemu-io, except under CI=true.
func needQemu(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (CI=true)", tool)
			}
			t.Skipf("%s not installed; apt-get install qemu-utils", tool)
		}
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("failed")) || bytes.Contains(out, []byte("Pattern verification")) {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// image makes an image of size bytes in format "raw" or "qcow2" (with
// qemu-img, so that the device is tested on what it did not write).
func image(t testing.TB, format string, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk."+format)
	if format == "raw" {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		return p
	}
	needQemu(t)
	run(t, "qemu-img", "create", "-q", "-f", format, p, fmt.Sprint(size))
	return p
}

// open opens path through a block graph as the VMM would, attached for
// writing unless readOnly; everything is closed when the test ends.
func open(t testing.TB, format, path string, readOnly bool) *block.Backend {
	b, _ := openClose(t, format, path, readOnly)
	return b
}

// openClose is open with a function that closes it all early (to hand
// the image to qemu-img), which the test may call or leave to its end.
func openClose(t testing.TB, format, path string, readOnly bool) (*block.Backend, func()) {
	t.Helper()
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	var b *block.Backend
	closeAll := sync.OnceFunc(func() {
		if b != nil {
			if err := g.Detach(b); err != nil {
				t.Error(err)
			}
		}
		if err := g.Close(); err != nil {
			t.Error(err)
		}
		reg.CloseAll()
	})
	t.Cleanup(closeAll)
	d := json.NewDecoder(strings.NewReader(fmt.Sprintf(`{"driver":%q,"node-name":"disk0","read-only":%v,"discard":"unmap","file":{"driver":"file","filename":%q}}`, format, readOnly, path)))
	d.UseNumber()
	var o map[string]any
	if err := d.Decode(&o); err != nil {
		t.Fatal(err)
	}
	n, err := g.Add(block.Options(o))
	if err != nil {
		t.Fatal(err)
	}
	b, err = g.Attach("", n, block.Perm{Write: !readOnly})
	if err != nil {
		t.Fatal(err)
	}
	return b, closeAll
}

// qemuCheck runs qemu-img check on a qcow2 image (raw has nothing to check).
func qemuCheck(t testing.TB, format, path string) {
	t.Helper()
	if format == "qcow2" {
		run(t, "qemu-img", "check", "-f", format, path)
	}
}

// qemuRead checks with qemu-io that each range holds its byte.
func qemuRead(t testing.TB, format, path string, ranges [][3]int64) {
	t.Helper()
	needQemu(t)
	args := []string{"-f", format}
	for _, r := range ranges {
		args = append(args, "-c", fmt.Sprintf("read -P 0x%x %d %d", r[2], r[0], r[1]))
	}
	run(t, "qemu-io", append(args, path)...)
}

// qemuRaw is the image's guest-visible content, as qemu-img reads it.
func qemuRaw(t testing.TB, format, path string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "content.raw")
	run(t, "qemu-img", "convert", "-f", format, "-O", "raw", path, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rig is a device with its queues in a guest memory, driven by virtqtest.
type rig struct {
	t    testing.TB
	dev  *virtioblk.Device
	mem  *guestmem.Memory
	drv  []*virtqtest.Driver
	q    []*virtq.Queue
	kick chan int // notify calls, by queue
}

const memSize = 64 << 20

func newRig(t testing.TB, disk virtioblk.Disk, cfg virtioblk.Config, features uint64) *rig {
	t.Helper()
	dev, err := virtioblk.New(disk, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if features == 0 {
		features = dev.Features()
	}
	if err := dev.Ack(features); err != nil {
		t.Fatal(err)
	}
	mem, err := guestmem.NewMemfd("virtio-blk-test", memSize)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, dev: dev, mem: mem, kick: make(chan int, 1<<16)}
	t.Cleanup(func() {
		dev.Drain()
		mem.Close()
	})
	nq := max(cfg.NumQueues, 1)
	qs := uint16(max(cfg.QueueSize, 128))
	per := uint64(memSize / nq)
	for i := range nq {
		d := virtqtest.New(mem, qs, uint64(i)*per, uint64(i+1)*per, features)
		q, err := d.Queue()
		if err != nil {
			t.Fatal(err)
		}
		r.drv = append(r.drv, d)
		r.q = append(r.q, q)
	}
	return r
}

// req is one request as a driver lays it out: a header, data buffers,
// a status byte.
type req struct {
	typ    uint32
	sector uint64
	out    []byte // payload the device reads (OUT data, discard segments)
	in     int    // bytes the device writes before the status byte
	split  int    // cut each payload into buffers of this size (0: one)
	// filled in by add
	head      uint16
	statusGPA uint64
	inGPA     []uint64
	inLens    []int
}

func (r *rig) add(qi int, q *req, indirect bool) {
	r.t.Helper()
	d := r.drv[qi]
	hdr := d.Alloc(16)
	h := d.Bytes(hdr, 16)
	binary.LittleEndian.PutUint32(h, q.typ)
	binary.LittleEndian.PutUint32(h[4:], 0)
	binary.LittleEndian.PutUint64(h[8:], q.sector)
	bufs := []virtqtest.Buf{{GPA: hdr, Len: 16}}
	pieces := func(n int) []int {
		if q.split == 0 || n <= q.split {
			return []int{n}
		}
		var p []int
		for ; n > 0; n -= q.split {
			p = append(p, min(n, q.split))
		}
		return p
	}
	if len(q.out) > 0 {
		off := 0
		for _, l := range pieces(len(q.out)) {
			g := d.Alloc(uint64(l))
			copy(d.Bytes(g, uint64(l)), q.out[off:off+l])
			off += l
			bufs = append(bufs, virtqtest.Buf{GPA: g, Len: uint32(l)})
		}
	}
	if q.in > 0 {
		for _, l := range pieces(q.in) {
			g := d.Alloc(uint64(l))
			clear(d.Bytes(g, uint64(l)))
			q.inGPA = append(q.inGPA, g)
			q.inLens = append(q.inLens, l)
			bufs = append(bufs, virtqtest.Buf{GPA: g, Len: uint32(l), Write: true})
		}
	}
	q.statusGPA = d.Alloc(1)
	d.Bytes(q.statusGPA, 1)[0] = 0xee
	bufs = append(bufs, virtqtest.Buf{GPA: q.statusGPA, Len: 1, Write: true})
	head, ok := d.Add(bufs, indirect)
	if !ok {
		r.t.Fatal("queue full")
	}
	q.head = head
}

// serve runs the device on queue qi until everything added is used.
func (r *rig) serve(qi int) {
	r.t.Helper()
	if err := r.dev.Serve(r.q[qi], func() { r.kick <- qi }); err != nil {
		r.t.Fatalf("Serve: %v", err)
	}
	r.dev.Drain()
}

func (r *rig) status(q *req) byte { return r.drv[0].Bytes(q.statusGPA, 1)[0] }

func (r *rig) data(qi int, q *req) []byte {
	var b []byte
	for i, g := range q.inGPA {
		b = append(b, r.drv[qi].Bytes(g, uint64(q.inLens[i]))...)
	}
	return b
}

// used collects the used elements of queue qi: head -> written length.
func (r *rig) used(qi int) map[uint16]uint32 {
	m := map[uint16]uint32{}
	for {
		h, n, ok := r.drv[qi].Used()
		if !ok {
			return m
		}
		m[h] = n
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed ^ byte(i*13+i>>9)
	}
	return b
}

func segment(sector uint64, num, flags uint32) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, sector)
	binary.LittleEndian.PutUint32(b[8:], num)
	binary.LittleEndian.PutUint32(b[12:], flags)
	return b
}

func checkFds(t *testing.T) { fdtest.Check(t) }
