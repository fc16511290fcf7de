package virtioblk_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"minivmm/vm/guestmem"
	"minivmm/vm/virtioblk"
	"minivmm/vm/virtq"
	"minivmm/vm/virtq/virtqtest"
)

const (
	benchImage = 64 << 20
	benchBS    = 4096
	benchChunk = 4096
)

// benchImagePath is an image of benchImage bytes of data (not holes), so
// that reads copy data as a guest's would.
func benchImagePath(b *testing.B, format string) string {
	b.Helper()
	raw := filepath.Join(b.TempDir(), "disk.raw")
	data := make([]byte, benchImage)
	for i := range data {
		data[i] = byte(i>>12) | 1
	}
	if err := os.WriteFile(raw, data, 0o600); err != nil {
		b.Fatal(err)
	}
	if format == "raw" {
		return raw
	}
	needQemu(b)
	q := filepath.Join(b.TempDir(), "disk.qcow2")
	run(b, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, q)
	return q
}

// offsets is a fixed pseudo-random sequence of 4 KiB-aligned offsets.
func offsets(n int) []int64 {
	o := make([]int64, n)
	x := uint64(0x9e3779b97f4a7c15)
	for i := range o {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		o[i] = int64(x%(benchImage/benchBS)) * benchBS
	}
	return o
}

// BenchmarkDeviceCost: 4 KiB random reads and writes through the whole
// device model (a driver on a virtqueue in a memfd, the device popping,
// parsing, serving and pushing) against the same requests straight on the
// block layer (Backend.ReadV/WriteV from depth goroutines), in the same
// run: the ratio metric is the device model's cost (goal: within 1.2).
func BenchmarkDeviceCost(b *testing.B) {
	for _, format := range []string{"raw", "qcow2"} {
		for _, write := range []bool{false, true} {
			for _, depth := range []int{1, 32} {
				op := map[bool]string{false: "randread", true: "randwrite"}[write]
				b.Run(fmt.Sprintf("%s/%s/depth=%d", format, op, depth), func(b *testing.B) {
					disk := open(b, format, benchImagePath(b, format), false)
					offs := offsets(b.N)
					db := newDeviceBench(b, disk, write, depth)
					defer db.close()
					b.SetBytes(benchBS)
					b.ResetTimer()
					// Both run the same requests in alternating chunks,
					// so that both see the same load on a shared machine.
					var node, dev time.Duration
					for i, c := 0, 0; i < len(offs); i, c = i+benchChunk, c+1 {
						chunk := offs[i:min(i+benchChunk, len(offs))]
						for k := range 2 {
							t0 := time.Now()
							if (k+c)%2 == 0 {
								runNode(b, disk, write, depth, chunk)
								node += time.Since(t0)
							} else {
								db.run(chunk)
								dev += time.Since(t0)
							}
						}
					}
					b.StopTimer()
					b.ReportMetric(float64(node.Nanoseconds())/float64(b.N), "node-ns/op")
					b.ReportMetric(float64(dev.Nanoseconds())/float64(b.N), "device-ns/op")
					b.ReportMetric(float64(dev)/float64(node), "device/node")
				})
			}
		}
	}
}

// runNode issues the requests from depth goroutines, each synchronous.
func runNode(b *testing.B, disk virtioblk.Disk, write bool, depth int, offs []int64) {
	var wg sync.WaitGroup
	for g := range depth {
		wg.Go(func() {
			buf := [][]byte{make([]byte, benchBS)}
			for i := g; i < len(offs); i += depth {
				var err error
				if write {
					_, err = disk.WriteV(buf, offs[i], 0)
				} else {
					_, err = disk.ReadV(buf, offs[i])
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// deviceBench is a device on one queue and a driver that keeps depth
// requests in flight on it as a guest's does: add, kick (Serve), wait for
// the interrupt, reap, refill.
type deviceBench struct {
	b      *testing.B
	dev    *virtioblk.Device
	mem    *guestmem.Memory
	d      *virtqtest.Driver
	q      *virtq.Queue
	depth  int
	typ    uint32
	slots  []benchSlot
	slotOf [benchQueue]int
	kick   chan struct{}
}

type benchSlot struct {
	hdr, status uint64
	bufs        []virtqtest.Buf
}

const benchQueue = 256

func newDeviceBench(b *testing.B, disk virtioblk.Disk, write bool, depth int) *deviceBench {
	dev, err := virtioblk.New(disk, virtioblk.Config{QueueSize: benchQueue, WriteCache: true})
	if err != nil {
		b.Fatal(err)
	}
	features := dev.Features()
	if err := dev.Ack(features); err != nil {
		b.Fatal(err)
	}
	mem, err := guestmem.NewMemfd("bench", 16<<20)
	if err != nil {
		b.Fatal(err)
	}
	db := &deviceBench{b: b, dev: dev, mem: mem, depth: depth, kick: make(chan struct{}, 1), typ: virtioblk.TypeIn}
	if write {
		db.typ = virtioblk.TypeOut
	}
	db.d = virtqtest.New(mem, benchQueue, 0, 16<<20, features)
	if db.q, err = db.d.Queue(); err != nil {
		b.Fatal(err)
	}
	db.slots = make([]benchSlot, depth)
	for i := range db.slots {
		s := &db.slots[i]
		// Page-aligned data, as a guest's: a misaligned buffer costs
		// the kernel's copy twice as much.
		data := db.d.AllocAligned(benchBS, 4096)
		s.hdr, s.status = db.d.Alloc(16), db.d.Alloc(1)
		s.bufs = []virtqtest.Buf{{GPA: s.hdr, Len: 16}, {GPA: data, Len: benchBS, Write: !write}, {GPA: s.status, Len: 1, Write: true}}
	}
	return db
}

func (db *deviceBench) close() {
	db.dev.Drain()
	db.mem.Close()
}

func (db *deviceBench) notify() {
	select {
	case db.kick <- struct{}{}:
	default:
	}
}

// run serves the requests at offs, depth at a time.
func (db *deviceBench) run(offs []int64) {
	b, d := db.b, db.d
	issued, done := 0, 0
	issue := func(si int) {
		s := &db.slots[si]
		h := d.Bytes(s.hdr, 16)
		binary.LittleEndian.PutUint32(h, db.typ)
		binary.LittleEndian.PutUint64(h[8:], uint64(offs[issued]/512))
		head, ok := d.Add(s.bufs, false)
		if !ok {
			b.Fatal("queue full")
		}
		db.slotOf[head] = si
		issued++
	}
	for i := 0; i < db.depth && issued < len(offs); i++ {
		issue(i)
	}
	if err := db.dev.Serve(db.q, db.notify); err != nil {
		b.Fatal(err)
	}
	for done < len(offs) {
		added := false
		for {
			head, _, ok := d.Used()
			if !ok {
				break
			}
			done++
			si := db.slotOf[head]
			if st := d.Bytes(db.slots[si].status, 1)[0]; st != virtioblk.StatusOK {
				b.Fatalf("status %d", st)
			}
			if issued < len(offs) {
				issue(si)
				added = true
			}
		}
		if added {
			if err := db.dev.Serve(db.q, db.notify); err != nil {
				b.Fatal(err)
			}
			continue
		}
		if done == len(offs) || d.ArmInterrupt() {
			continue
		}
		<-db.kick
	}
}
