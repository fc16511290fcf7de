package vhostuser_test

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"minivmm/internal/fdtest"
	"minivmm/vm/guestmem"
	"minivmm/vm/vhostuser"
)

// busyDriver is a hostile driver: it gives every request back to the
// device the moment it completes, and kicks each time, so the device's
// kick handler never runs out of requests.
type busyDriver struct {
	mem  *guestmem.Memory
	fe   *vhostuser.Frontend
	quit chan struct{}
	done chan struct{}
	// noKick: the front end is about to reset; Kick may not race with
	// it. The device sees no difference: while it takes requests it
	// does not wait for kicks.
	noKick atomic.Bool
	quiet  chan struct{} // closed once the driver heard noKick
}

const (
	busySize  = 64 // queue size
	busySlots = 16 // requests, three descriptors each
)

func startBusy(t *testing.T, mem *guestmem.Memory, fe *vhostuser.Frontend) *busyDriver {
	le := binary.LittleEndian
	slice := func(gpa, n uint64) []byte {
		b, err := mem.Slice(gpa, n)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	desc := slice(descGPA, 16*busySize)
	put := func(i int, addr uint64, l uint32, flags, next uint16) {
		e := desc[16*i:]
		le.PutUint64(e, addr)
		le.PutUint32(e[8:], l)
		le.PutUint16(e[12:], flags)
		le.PutUint16(e[14:], next)
	}
	for i := range busySlots {
		hdr := slice(hdrGPA+uint64(16*i), 16)
		le.PutUint32(hdr, 0) // IN
		le.PutUint64(hdr[8:], uint64(8*i))
		put(3*i, hdrGPA+uint64(16*i), 16, 1, uint16(3*i+1))
		put(3*i+1, dataGPA+uint64(4096*i), 4096, 1|2, uint16(3*i+2))
		put(3*i+2, statusGPA+uint64(i), 1, 2, 0)
	}
	avail := slice(availGPA, 4+2*busySize)
	used := slice(usedGPA, 4+8*busySize)
	d := &busyDriver{mem: mem, fe: fe, quit: make(chan struct{}), done: make(chan struct{}), quiet: make(chan struct{})}
	go func() {
		defer close(d.done)
		var next, lastUsed uint16
		heard := false
		add := func(head uint16) {
			le.PutUint16(avail[4+2*int(next%busySize):], head)
			next++
			le.PutUint16(avail[2:], next)
		}
		for i := range busySlots {
			add(uint16(3 * i))
		}
		fe.Kick(0)
		for {
			select {
			case <-d.quit:
				return
			default:
			}
			for u := le.Uint16(used[2:]); lastUsed != u; lastUsed++ {
				add(uint16(le.Uint32(used[4+8*int(lastUsed%busySize):])))
			}
			if !d.noKick.Load() {
				fe.Kick(0)
			} else if !heard {
				heard = true
				close(d.quiet)
			}
		}
	}()
	return d
}

func (d *busyDriver) stop() {
	close(d.quit)
	<-d.done
}

// TestHostileDriverStops: a front end whose driver keeps its queue full
// for ever still gets its ring back (GET_VRING_BASE), and can still go
// away (disconnect); either way the export serves the next front end and
// every fd the hostile one sent is closed. On the real device the serving
// loop does find the ring empty now and then, so this need not hang
// without the session's device stop; TestStuckQueueStops holds a kick
// handler for good and does.
func TestHostileDriverStops(t *testing.T) {
	fdtest.Check(t)
	_, sock := backend(t, "minivmm", 1<<20)
	for _, how := range []string{"get-vring-base", "disconnect"} {
		t.Run(how, func(t *testing.T) {
			mem, err := guestmem.NewMemfd("hostile", 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			defer mem.Close()
			fe, err := vhostuser.Dial(sock, mem)
			if err != nil {
				t.Fatal(err)
			}
			if err := fe.SetFeatures(1 << 32); err != nil {
				t.Fatal(err)
			}
			if err := fe.SetupQueue(0, busySize, descGPA, availGPA, usedGPA); err != nil {
				t.Fatal(err)
			}
			if err := fe.Start(); err != nil {
				t.Fatal(err)
			}
			d := startBusy(t, mem, fe)
			defer d.stop()
			time.Sleep(200 * time.Millisecond) // the device is busy now
			d.noKick.Store(true)
			<-d.quiet
			var wg sync.WaitGroup
			wg.Add(1)
			stopped := make(chan error, 1)
			go func() {
				defer wg.Done()
				if how == "disconnect" {
					vhostuser.DropConnection(fe)
					fe.Close() // the connection's gone: this only frees the eventfds
					stopped <- nil
					return
				}
				stopped <- fe.Reset()
			}()
			select {
			case err := <-stopped:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the back end did not stop the queue")
			}
			d.stop()
			d.quit = make(chan struct{}) // for the deferred stop
			d.done = make(chan struct{})
			close(d.done)
			if how != "disconnect" {
				if err := fe.Close(); err != nil {
					t.Fatal(err)
				}
			}
			wg.Wait()
			// The export serves the next front end.
			frontendRoundTrip(t, sock)
		})
	}
}
