package machine

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/block/faultdisk"
	"minivmm/vm/blkdriver"
	"minivmm/vm/workload"
)

// TestRequestTypes sends every request type through the guest's driver,
// the rings and the device to raw and qcow2 images, with and without
// indirect descriptors and EVENT_IDX, and checks what reaches the image.
func TestRequestTypes(t *testing.T) {
	checkFds(t)
	for _, format := range []string{"raw", "qcow2"} {
		for _, refuse := range []uint64{0, blkdriver.Bit(blkdriver.FeatIndirect) | blkdriver.Bit(blkdriver.FeatEventIdx)} {
			t.Run(format, func(t *testing.T) {
				g := newGraph(t)
				node := addImage(t, g, "disk0", format, image(t, format, 4<<20))
				m := newMachine(t, g, false)
				dev, err := m.AddDevice(DeviceConfig{Driver: "virtio-blk-pci", ID: "vd0", Drive: "disk0", NumQueues: 2, QueueSize: 64, Serial: "SN-42"})
				if err != nil {
					t.Fatal(err)
				}
				// A second driver instance, with some features refused.
				if err := dev.disk.Close(); err != nil {
					t.Fatal(err)
				}
				if dev.disk, err = blkdriver.Open(dev.tr, m.gmem, blkdriver.Options{Refuse: refuse, QueueSize: 64}); err != nil {
					t.Fatal(err)
				}
				requestTypes(t, dev.disk, node)
			})
		}
	}
}

func requestTypes(t *testing.T, d *blkdriver.Disk, node *block.Node) {
	if got := d.Capacity(); got != 4<<20 {
		t.Fatalf("capacity %d", got)
	}
	if len(d.Queues()) != 2 || d.Queues()[1].Size() != 64 {
		t.Fatalf("queues: %d", len(d.Queues()))
	}
	if id, err := d.ID(); err != nil || id != "SN-42" {
		t.Fatalf("GET_ID: %q, %v", id, err)
	}
	mem := d.Memory()
	buf, err := mem.Alloc(3*4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Free(buf)
	for i := range buf.B {
		buf.B[i] = byte(i*7 + 1)
	}
	q := d.Queues()[1]
	// OUT in three segments (an indirect table, where negotiated).
	segs := []blkdriver.Region{buf.Sub(0, 4096), buf.Sub(4096, 512), buf.Sub(4608, 4096-512+4096)}
	if err := q.Do(&blkdriver.Request{Type: blkdriver.TypeOut, Sector: 8, Data: segs}); err != nil {
		t.Fatalf("OUT: %v", err)
	}
	got := make([]byte, 3*4096)
	if _, err := node.ReadAt(got, 4096); err != nil || !bytes.Equal(got, buf.B) {
		t.Fatalf("image after OUT differs (%v)", err)
	}
	in, _ := mem.Alloc(3*4096, 4096)
	defer mem.Free(in)
	r := &blkdriver.Request{Type: blkdriver.TypeIn, Sector: 8, Data: []blkdriver.Region{in.Sub(0, 512), in.Sub(512, 3*4096-512)}}
	if err := q.Do(r); err != nil || !bytes.Equal(in.B, buf.B) {
		t.Fatalf("IN: %v, equal %v", err, bytes.Equal(in.B, buf.B))
	}
	if r.Len != 3*4096+1 {
		t.Errorf("IN used.len %d, want data and status", r.Len)
	}
	if err := q.Do(&blkdriver.Request{Type: blkdriver.TypeFlush}); err != nil {
		t.Fatalf("FLUSH: %v", err)
	}
	seg, _ := mem.Alloc(16, 16)
	defer mem.Free(seg)
	for _, c := range []struct {
		typ   uint32
		unmap bool
	}{{blkdriver.TypeWriteZeroes, false}, {blkdriver.TypeWriteZeroes, true}, {blkdriver.TypeDiscard, false}} {
		if _, err := node.WriteAt(bytes.Repeat([]byte{0xaa}, 4096), 1<<20); err != nil {
			t.Fatal(err)
		}
		blkdriver.PutSegments(seg.B, []blkdriver.Segment{{Sector: 1 << 20 / 512, Sectors: 8, Unmap: c.unmap}})
		if err := q.Do(&blkdriver.Request{Type: c.typ, Data: []blkdriver.Region{seg}}); err != nil {
			t.Fatalf("type %d: %v", c.typ, err)
		}
		z := make([]byte, 4096)
		node.ReadAt(z, 1<<20)
		if c.typ == blkdriver.TypeWriteZeroes && !bytes.Equal(z, make([]byte, 4096)) {
			t.Errorf("WRITE_ZEROES unmap=%v left data", c.unmap)
		}
	}
	// What the spec says a device answers to bad requests.
	var se *blkdriver.StatusError
	if err := q.Do(&blkdriver.Request{Type: blkdriver.TypeIn, Sector: 4<<20/512 - 1, Data: []blkdriver.Region{in.Sub(0, 1024)}}); !errors.As(err, &se) || se.Status != blkdriver.StatusIOErr {
		t.Errorf("read past the end: %v", err)
	}
	if err := q.Do(&blkdriver.Request{Type: 99, Data: []blkdriver.Region{in.Sub(0, 512)}}); !errors.As(err, &se) || se.Status != blkdriver.StatusUnsupp {
		t.Errorf("unknown type: %v", err)
	}
	for _, q := range d.Queues() {
		if err := q.Err(); err != nil {
			t.Errorf("queue %d: %v", q.Index(), err)
		}
	}
}

// TestWorkloadMultiqueue runs verifying mixed workloads on several queues
// at depth 32, on raw and qcow2, and checks the result is clean and
// plausible.
func TestWorkloadMultiqueue(t *testing.T) {
	checkFds(t)
	for _, variant := range []string{"raw", "qcow2", "raw without INDIRECT and EVENT_IDX"} {
		t.Run(variant, func(t *testing.T) {
			format, _, plain := strings.Cut(variant, " ")
			g := newGraph(t)
			addImage(t, g, "disk0", format, image(t, format, 16<<20))
			m := newMachine(t, g, false)
			dev, err := m.AddDevice(DeviceConfig{Driver: "virtio-blk-pci", ID: "vd0", Drive: "disk0", NumQueues: 4, QueueSize: 128})
			if err != nil {
				t.Fatal(err)
			}
			if plain {
				if err := dev.disk.Close(); err != nil {
					t.Fatal(err)
				}
				refuse := blkdriver.Bit(blkdriver.FeatIndirect) | blkdriver.Bit(blkdriver.FeatEventIdx)
				if dev.disk, err = blkdriver.Open(dev.tr, m.gmem, blkdriver.Options{Refuse: refuse, QueueSize: 128}); err != nil {
					t.Fatal(err)
				}
			}
			for _, s := range []string{
				"rw=randwrite,bs=4k,iodepth=32,numjobs=4,size=4m,io_size=1m,verify=on",
				"rw=randrw,bs=8k,iodepth=32,numjobs=4,size=4m,io_size=2m,rwmixread=50,verify=on",
				"rw=read,bs=64k,iodepth=8,numjobs=2,size=4m,verify=on",
				"rw=write,bs=4k,iodepth=32,numjobs=2,size=1m,verify=on",
			} {
				spec, err := workload.Parse(s)
				if err != nil {
					t.Fatal(err)
				}
				var progress int
				res, err := m.RunWorkload(spec, workload.Options{Progress: func(workload.Progress) { progress++ }, ProgressEvery: 10 * time.Millisecond})
				if err != nil {
					t.Fatalf("%s: %v", s, err)
				}
				if !res.OK() {
					t.Fatalf("%s:\n%s", s, res)
				}
				ios := res.Read.IOs + res.Write.IOs
				if ios == 0 || res.Spec.Verify && res.Checked == 0 && spec.RW != "randwrite" {
					t.Fatalf("%s: nothing done or checked:\n%s", s, res)
				}
				if spec.Reads() && res.Read.Lat.P50 <= 0 || res.Read.Lat.P99 < res.Read.Lat.P50 {
					t.Errorf("%s: latencies %+v", s, res.Read.Lat)
				}
				t.Logf("%s", res)
			}
		})
	}
}

// TestVerifyCatchesCorruption puts a driver that spoils one write under
// the device: the workload's read-back reports it at its offset.
func TestVerifyCatchesCorruption(t *testing.T) {
	checkFds(t)
	const at = 5*4096 + 100
	for _, c := range []struct {
		mode string
		want map[int64]string // offset -> kind
	}{
		{"flip", map[int64]string{5*4096 + 0: "corrupt"}},
		{"drop", map[int64]string{5 * 4096: "unstamped"}},
		{"misplace", map[int64]string{5 * 4096: "unstamped", 4 * 4096: "misplaced"}},
		{"faultdisk-drop", map[int64]string{5 * 4096: "unstamped"}},
	} {
		t.Run(c.mode, func(t *testing.T) {
			g := newGraph(t)
			var err error
			if c.mode == "faultdisk-drop" {
				fd := faultdisk.New(1 << 20)
				fd.AddRule(&faultdisk.Rule{Kinds: faultdisk.Write, Off: at, Len: 1, Drop: true, Times: 1})
				err = fd.Install(g, "faulty")
			} else {
				err = g.AddDriver((&corruptDisk{b: make([]byte, 1<<20), mode: c.mode, at: at}).driver())
			}
			if err != nil {
				t.Fatal(err)
			}
			name := "corrupt"
			if c.mode == "faultdisk-drop" {
				name = "faulty"
			}
			if _, err := g.AddRoot(block.Options{"driver": name, "node-name": "disk0"}); err != nil {
				t.Fatal(err)
			}
			m := newMachine(t, g, false)
			if _, err := m.AddDevice(DeviceConfig{Driver: "virtio-blk-pci", ID: "vd0", Drive: "disk0", NumQueues: 1, QueueSize: 64}); err != nil {
				t.Fatal(err)
			}
			// Depth 1: no later write covers up a misplaced one.
			spec, _ := workload.Parse("rw=write,bs=4k,iodepth=1,size=64k,verify=on")
			res, err := m.RunWorkload(spec, workload.Options{})
			if err != nil {
				t.Fatal(err)
			}
			found := map[int64]string{}
			for _, mm := range res.Mismatches {
				// A whole 4 KiB block is spoilt: report its first sector.
				off := mm.Offset &^ 4095
				if _, seen := found[off]; !seen {
					found[off] = mm.Kind
				}
				if mm.Device != "vd0" || !strings.Contains(mm.String(), "offset") {
					t.Errorf("mismatch %+v: %s", mm, mm)
				}
			}
			if len(found) != len(c.want) {
				t.Fatalf("found %v, want %v\n%s", found, c.want, res)
			}
			for off, kind := range c.want {
				if found[off] != kind {
					t.Errorf("at %d: %q, want %q\n%s", off, found[off], kind, res)
				}
			}
			if c.mode == "flip" && (res.MismatchCount != 1 || res.Mismatches[0].Offset != 5*4096) {
				t.Errorf("flip: %d mismatches, first at %d", res.MismatchCount, res.Mismatches[0].Offset)
			}
			if c.mode == "misplace" && (found[4*4096] != "misplaced" || res.Mismatches[0].FoundOff != 5*4096 && res.Mismatches[len(res.Mismatches)-1].FoundOff != 5*4096) {
				t.Errorf("misplace: the sector at 16384 should say it was written for 20480:\n%s", res)
			}
			if res.OK() {
				t.Error("result OK despite the mismatches")
			}
		})
	}
}

// TestStopContMidWorkload stops and continues the machine while a
// verifying workload runs: no request is lost (the run ends with every
// one completed, none timed out) and verify stays clean; while stopped,
// nothing is in flight on the device.
func TestStopContMidWorkload(t *testing.T) {
	checkFds(t)
	g := newGraph(t)
	node := addImage(t, g, "disk0", "raw", image(t, "raw", 8<<20))
	m := newMachine(t, g, false)
	dev, err := m.AddDevice(DeviceConfig{Driver: "virtio-blk-pci", ID: "vd0", Drive: "disk0", NumQueues: 2, QueueSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := workload.Parse("rw=randrw,bs=4k,iodepth=16,numjobs=2,size=8m,runtime=1500ms,verify=on")
	done := make(chan *workload.Result)
	go func() {
		res, err := m.RunWorkload(spec, workload.Options{Timeout: 10 * time.Second})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	for i := 0; i < 4; i++ {
		time.Sleep(150 * time.Millisecond)
		m.Pause()
		if n := dev.model.InFlight(); n != 0 {
			t.Errorf("stopped with %d requests in flight on the device", n)
		}
		if n := node.InFlight(); n != 0 {
			t.Errorf("stopped with %d requests in flight on the node", n)
		}
		before := dev.model.InFlight()
		time.Sleep(50 * time.Millisecond)
		if after := dev.model.InFlight(); after != before {
			t.Errorf("requests started while stopped")
		}
		m.Resume()
	}
	res := <-done
	if res == nil {
		return
	}
	if !res.OK() || res.Read.IOs == 0 || res.Write.IOs == 0 || res.Checked == 0 {
		t.Fatalf("after stop/cont:\n%s", res)
	}
	for _, q := range dev.disk.Queues() {
		if n := q.InFlight(); n != 0 {
			t.Errorf("queue %d: %d requests never completed", q.Index(), n)
		}
	}
}

// TestStartPaused: a machine started with -S runs no request until cont.
func TestStartPaused(t *testing.T) {
	checkFds(t)
	g := newGraph(t)
	addImage(t, g, "disk0", "raw", image(t, "raw", 1<<20))
	m := newMachine(t, g, true)
	if _, err := m.AddDevice(DeviceConfig{Driver: "virtio-blk-pci", ID: "vd0", Drive: "disk0", NumQueues: 1, QueueSize: 16}); err != nil {
		t.Fatal(err)
	}
	spec, _ := workload.Parse("rw=write,bs=4k,size=64k,verify=on")
	done := make(chan *workload.Result, 1)
	go func() {
		res, _ := m.RunWorkload(spec, workload.Options{})
		done <- res
	}()
	select {
	case <-done:
		t.Fatal("workload ran on a stopped machine")
	case <-time.After(100 * time.Millisecond):
	}
	m.Resume()
	if res := <-done; res == nil || !res.OK() || res.Write.IOs != 16 {
		t.Fatalf("after cont: %v", res)
	}
}

// TestUnplugBrokenDevice: a guest that sends a descriptor outside its
// memory breaks the device (needs reset); unplugging it still completes,
// the request is failed, and the drive is free again.
func TestUnplugBrokenDevice(t *testing.T) {
	checkFds(t)
	g := newGraph(t)
	addImage(t, g, "disk0", "raw", image(t, "raw", 1<<20))
	m := newMachine(t, g, false)
	dev, err := m.AddDevice(DeviceConfig{Driver: "virtio-blk-pci", ID: "vd0", Drive: "disk0", NumQueues: 1, QueueSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan byte, 1)
	bad := &blkdriver.Request{Type: blkdriver.TypeIn, Data: []blkdriver.Region{{GPA: 1 << 40, B: make([]byte, 512)}},
		Done: func(r *blkdriver.Request) { done <- r.Status }}
	if err := dev.Disk().Queues()[0].Submit(bad); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return dev.Err() != nil })
	deleted := make(chan error, 1)
	start, err := m.DelDevice("vd0", func(_ *Device, err error) { deleted <- err })
	if err != nil {
		t.Fatal(err)
	}
	start()
	select {
	case <-deleted:
	case <-time.After(10 * time.Second):
		t.Fatal("unplug of a broken device hangs")
	}
	if st := <-done; st != blkdriver.StatusNotCompleted {
		t.Errorf("request on the broken device: status %#x", st)
	}
	if _, err := m.AddDevice(DeviceConfig{Driver: "virtio-blk-pci", ID: "vd1", Drive: "disk0", NumQueues: 1, QueueSize: 16}); err != nil {
		t.Fatalf("drive not free after the unplug: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

// TestLongStopIsNoTimeout: requests the guest made just before a stop
// wait in the ring for cont; a stop longer than the workload's request
// timeout does not make them time out.
func TestLongStopIsNoTimeout(t *testing.T) {
	checkFds(t)
	g := newGraph(t)
	addImage(t, g, "disk0", "raw", image(t, "raw", 4<<20))
	m := newMachine(t, g, false)
	if _, err := m.AddDevice(DeviceConfig{Driver: "virtio-blk-pci", ID: "vd0", Drive: "disk0", NumQueues: 1, QueueSize: 64}); err != nil {
		t.Fatal(err)
	}
	spec, _ := workload.Parse("rw=randrw,bs=4k,iodepth=16,size=4m,runtime=600ms,verify=on")
	done := make(chan *workload.Result)
	go func() {
		res, _ := m.RunWorkload(spec, workload.Options{Timeout: 250 * time.Millisecond})
		done <- res
	}()
	time.Sleep(100 * time.Millisecond)
	m.Pause()
	time.Sleep(time.Second) // four timeouts
	m.Resume()
	if res := <-done; res == nil || !res.OK() {
		t.Fatalf("after a long stop: %v", res)
	}
}

// TestBatchLargerThanQueue submits more requests in one call than the
// queue has descriptors for: the driver publishes what it has before it
// waits for room, so all complete.
func TestBatchLargerThanQueue(t *testing.T) {
	checkFds(t)
	g := newGraph(t)
	addImage(t, g, "disk0", "raw", image(t, "raw", 1<<20))
	m := newMachine(t, g, false)
	dev, err := m.AddDevice(DeviceConfig{Driver: "virtio-blk-pci", ID: "vd0", Drive: "disk0", NumQueues: 1, QueueSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	for _, refuse := range []uint64{0, blkdriver.Bit(blkdriver.FeatIndirect) | blkdriver.Bit(blkdriver.FeatEventIdx)} {
		dev.disk.Close()
		if dev.disk, err = blkdriver.Open(dev.tr, m.gmem, blkdriver.Options{Refuse: refuse}); err != nil {
			t.Fatal(err)
		}
		buf, _ := m.gmem.Alloc(40*1024, 4096)
		var wg sync.WaitGroup
		var reqs []*blkdriver.Request
		for i := 0; i < 40; i++ {
			wg.Add(1)
			reqs = append(reqs, &blkdriver.Request{Type: blkdriver.TypeOut, Sector: uint64(2 * i),
				Data: []blkdriver.Region{buf.Sub(1024*i, 512), buf.Sub(1024*i+512, 512)}, Done: func(*blkdriver.Request) { wg.Done() }})
		}
		if err := dev.disk.Queues()[0].Submit(reqs...); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		for _, r := range reqs {
			if r.Status != blkdriver.StatusOK {
				t.Fatalf("request at %d: status %d", r.Sector, r.Status)
			}
		}
		m.gmem.Free(buf)
	}
}
