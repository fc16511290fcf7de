package virtioblk_test

import (
	"sync"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/vm/guestmem"
	"minivmm/vm/virtioblk"
	"minivmm/vm/virtq/virtqtest"
)

// gatedDisk holds every request until released, counting how many are
// inside at once.
type gatedDisk struct {
	virtioblk.Disk
	mu      sync.Mutex
	inside  int
	reached chan struct{} // closed when want requests are inside at once
	want    int
	release chan struct{}
}

func (g *gatedDisk) enter() {
	g.mu.Lock()
	g.inside++
	if g.inside == g.want {
		close(g.reached)
	}
	g.mu.Unlock()
	<-g.release
}

func (g *gatedDisk) ReadV(bufs [][]byte, off int64) (int, error) {
	g.enter()
	return g.Disk.ReadV(bufs, off)
}

func (g *gatedDisk) WriteV(bufs [][]byte, off int64, f block.WriteFlags) (int, error) {
	g.enter()
	return g.Disk.WriteV(bufs, off, f)
}

// TestInFlightAtOnce: requests from every queue are in the block layer
// at the same time (none waits for another to finish; Serve itself waits
// for the one it serves), and Drain waits for them all.
func TestInFlightAtOnce(t *testing.T) {
	checkFds(t)
	const nq, per = 4, 8
	g := &gatedDisk{Disk: open(t, "raw", image(t, "raw", diskSize), false), want: nq * per,
		reached: make(chan struct{}), release: make(chan struct{})}
	r := newRig(t, g, virtioblk.Config{NumQueues: nq}, 0)
	// On failure too, the requests are let go before the rig drains.
	release := sync.OnceFunc(func() { close(g.release) })
	t.Cleanup(release)
	for qi := range nq {
		for i := range per {
			q := req{typ: virtioblk.TypeIn, sector: uint64(i * 8), in: 4096}
			if i%2 == 1 {
				q = req{typ: virtioblk.TypeOut, sector: uint64(1024 + qi*per + i), out: make([]byte, 512)}
			}
			r.add(qi, &q, false)
		}
	}
	var wg sync.WaitGroup
	for qi := range nq {
		wg.Go(func() {
			if err := r.dev.Serve(r.q[qi], nil); err != nil {
				t.Error(err)
			}
		})
	}
	select {
	case <-g.reached:
	case <-time.After(30 * time.Second):
		t.Fatalf("only %d of %d requests in flight at once", g.inside, nq*per)
	}
	drained := make(chan struct{})
	go func() {
		r.dev.Drain()
		close(drained)
	}()
	select {
	case <-drained:
		t.Fatal("Drain returned with requests in flight")
	case <-time.After(50 * time.Millisecond):
	}
	if n := r.dev.InFlight(); n != nq*per {
		t.Fatalf("InFlight %d, want %d", n, nq*per)
	}
	release()
	<-drained
	wg.Wait()
	for qi := range nq {
		if u := r.used(qi); len(u) != per {
			t.Fatalf("queue %d: %d used after Drain, want %d", qi, len(u), per)
		}
	}
}

// TestDrainThenUnmap: after Drain nothing of the device touches guest
// memory any more, so that a front end's memory can be unmapped (a
// goroutine still popping would fault on it).
func TestDrainThenUnmap(t *testing.T) {
	checkFds(t)
	for range 100 {
		dev, err := virtioblk.New(nullDisk{}, virtioblk.Config{})
		if err != nil {
			t.Fatal(err)
		}
		mem, err := guestmem.NewMemfd("unmap", 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		d := virtqtest.New(mem, 64, 0, 1<<20, dev.Features())
		q, err := d.Queue()
		if err != nil {
			t.Fatal(err)
		}
		for range 64 {
			d.Add([]virtqtest.Buf{{GPA: d.Alloc(16), Len: 16}, {GPA: d.Alloc(512), Len: 512, Write: true}, {GPA: d.Alloc(1), Len: 1, Write: true}}, false)
		}
		if err := dev.Serve(q, nil); err != nil {
			t.Fatal(err)
		}
		dev.Drain()
		if err := mem.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOnlyServePops: once Serve has returned and Drain has, nothing
// takes requests from the ring (a stopped transport stops the device)
// however many the driver adds, and Drain does not wait for them.
func TestOnlyServePops(t *testing.T) {
	checkFds(t)
	r := newRig(t, nullDisk{}, virtioblk.Config{}, 0)
	d := r.drv[0]
	add := func(n int) {
		for range n {
			d.Add([]virtqtest.Buf{{GPA: d.Alloc(16), Len: 16}, {GPA: d.Alloc(512), Len: 512, Write: true}, {GPA: d.Alloc(1), Len: 1, Write: true}}, false)
		}
	}
	add(32)
	if err := r.dev.Serve(r.q[0], nil); err != nil {
		t.Fatal(err)
	}
	r.dev.Drain()
	if got := len(r.used(0)); got != 32 {
		t.Fatalf("%d used, want 32", got)
	}
	taken := r.q[0].NextAvail()
	add(32)
	time.Sleep(20 * time.Millisecond)
	r.dev.Drain()
	if r.q[0].NextAvail() != taken || r.dev.InFlight() != 0 || len(r.used(0)) != 0 {
		t.Fatalf("requests taken with no Serve running: next avail %d -> %d", taken, r.q[0].NextAvail())
	}
	// The next kick takes them.
	if err := r.dev.Serve(r.q[0], nil); err != nil {
		t.Fatal(err)
	}
	r.dev.Drain()
	if got := len(r.used(0)); got != 32 {
		t.Fatalf("%d used after the next Serve, want 32", got)
	}
}

// TestStop: Stop ends a Serve kept busy by a driver that never stops
// adding requests, and holds the device still until Start; the requests
// left in the ring are served by the next Serve.
func TestStop(t *testing.T) {
	checkFds(t)
	r := newRig(t, nullDisk{}, virtioblk.Config{}, 0)
	d := r.drv[0]
	bufs := func() []virtqtest.Buf {
		return []virtqtest.Buf{{GPA: d.Alloc(16), Len: 16}, {GPA: d.Alloc(512), Len: 512, Write: true}, {GPA: d.Alloc(1), Len: 1, Write: true}}
	}
	slots := make([][]virtqtest.Buf, 32)
	for i := range slots {
		slots[i] = bufs()
		d.Add(slots[i], false)
	}
	quit := make(chan struct{})
	driver := make(chan struct{})
	go func() { // the guest: reaps and adds again, as fast as it can
		defer close(driver)
		for {
			select {
			case <-quit:
				return
			default:
			}
			for {
				if _, _, ok := d.Used(); !ok {
					break
				}
				d.Add(slots[0], false)
			}
		}
	}()
	served := make(chan error, 1)
	go func() { served <- r.dev.Serve(r.q[0], nil) }()
	time.Sleep(50 * time.Millisecond)
	stopped := make(chan struct{})
	go func() {
		r.dev.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("Stop did not return")
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	taken := r.q[0].NextAvail()
	time.Sleep(20 * time.Millisecond)
	if err := r.dev.Serve(r.q[0], nil); err != nil {
		t.Fatal(err)
	}
	if r.q[0].NextAvail() != taken || r.dev.InFlight() != 0 {
		t.Fatal("a stopped device took requests")
	}
	close(quit)
	<-driver
	r.dev.Start()
	if err := r.dev.Serve(r.q[0], nil); err != nil {
		t.Fatal(err)
	}
	r.dev.Drain()
	if d.Pending() != 0 {
		// Everything made available was served (Used frees chains).
		r.used(0)
		if d.Pending() != 0 {
			t.Fatalf("%d requests left after Start and Serve", d.Pending())
		}
	}
}
