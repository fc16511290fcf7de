package virtioblk_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"minivmm/vm/virtioblk"
	"minivmm/vm/virtq"
)

const diskSize = 8 << 20

// TestRequests: each request type on raw and qcow2 gets the status byte
// QEMU gives it, and reads see what writes, write-zeroes and discards
// left; the used length counts every writable byte (status included).
func TestRequests(t *testing.T) {
	for _, format := range []string{"raw", "qcow2"} {
		for _, indirect := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/indirect=%v", format, indirect), func(t *testing.T) {
				checkFds(t)
				needQemu(t)
				path := image(t, format, diskSize)
				disk, closeDisk := openClose(t, format, path, false)
				r := newRig(t, disk, virtioblk.Config{Serial: "minivmm-serial-0123456789"}, 0)
				data := pattern(64<<10, 0x5a)
				type step struct {
					name   string
					q      req
					status byte
					want   []byte // what an IN request reads
				}
				last := uint64(diskSize/512 - 8)
				steps := []step{
					{"write", req{typ: virtioblk.TypeOut, sector: 2048, out: data, split: 4096}, virtioblk.StatusOK, nil},
					{"read", req{typ: virtioblk.TypeIn, sector: 2048, in: len(data), split: 1536}, virtioblk.StatusOK, data},
					{"read across what was written", req{typ: virtioblk.TypeIn, sector: 2040, in: 8192}, virtioblk.StatusOK, append(make([]byte, 4096), data[:4096]...)},
					{"barrier bit ignored", req{typ: virtioblk.TypeIn | 0x80000000, sector: 2048, in: 512}, virtioblk.StatusOK, data[:512]},
					{"flush", req{typ: virtioblk.TypeFlush}, virtioblk.StatusOK, nil},
					{"get id", req{typ: virtioblk.TypeGetID, in: 20}, virtioblk.StatusOK, []byte("minivmm-serial-01234")},
					{"write zeroes", req{typ: virtioblk.TypeWriteZeroes, out: segment(2056, 8, 0)}, virtioblk.StatusOK, nil},
					{"write zeroes with unmap", req{typ: virtioblk.TypeWriteZeroes, out: segment(2064, 16, virtioblk.FlagUnmap)}, virtioblk.StatusOK, nil},
					{"discard", req{typ: virtioblk.TypeDiscard, out: segment(4096, 128, 0)}, virtioblk.StatusOK, nil},
					{"read after zeroing", req{typ: virtioblk.TypeIn, sector: 2048, in: 16 << 10}, virtioblk.StatusOK, append(append([]byte(nil), data[:4096]...), make([]byte, 12288)...)},
					{"last sectors", req{typ: virtioblk.TypeOut, sector: last, out: data[:4096]}, virtioblk.StatusOK, nil},
					{"read last sectors", req{typ: virtioblk.TypeIn, sector: last, in: 4096}, virtioblk.StatusOK, data[:4096]},
					{"read past the end", req{typ: virtioblk.TypeIn, sector: last, in: 4608}, virtioblk.StatusIOErr, nil},
					{"write past the end", req{typ: virtioblk.TypeOut, sector: diskSize / 512, out: data[:512]}, virtioblk.StatusIOErr, nil},
					{"sector far past the end", req{typ: virtioblk.TypeIn, sector: 1 << 62, in: 512}, virtioblk.StatusIOErr, nil},
					{"partial sector", req{typ: virtioblk.TypeOut, sector: 0, out: data[:100]}, virtioblk.StatusIOErr, nil},
					{"zeroes past the end", req{typ: virtioblk.TypeWriteZeroes, out: segment(last, 16, 0)}, virtioblk.StatusIOErr, nil},
					{"zeroes too long", req{typ: virtioblk.TypeWriteZeroes, out: segment(0, virtioblk.MaxWriteZeroesSectors+1, 0)}, virtioblk.StatusIOErr, nil},
					{"discard with unmap", req{typ: virtioblk.TypeDiscard, out: segment(0, 8, virtioblk.FlagUnmap)}, virtioblk.StatusUnsupp, nil},
					{"unknown segment flag", req{typ: virtioblk.TypeWriteZeroes, out: segment(0, 8, 2)}, virtioblk.StatusUnsupp, nil},
					{"two segments", req{typ: virtioblk.TypeDiscard, out: append(segment(0, 8, 0), segment(8, 8, 0)...)}, virtioblk.StatusUnsupp, nil},
					{"short segment", req{typ: virtioblk.TypeDiscard, out: segment(0, 8, 0)[:12]}, virtioblk.StatusIOErr, nil},
					{"scsi command", req{typ: 2, in: 96}, virtioblk.StatusUnsupp, nil},
					{"get lifetime", req{typ: virtioblk.TypeGetLifetime, in: 8}, virtioblk.StatusUnsupp, nil},
					{"unknown type", req{typ: 0x77}, virtioblk.StatusUnsupp, nil},
					{"empty read", req{typ: virtioblk.TypeIn, sector: 8}, virtioblk.StatusOK, nil},
				}
				for _, s := range steps {
					q := s.q
					r.add(0, &q, indirect)
					r.serve(0)
					used := r.used(0)
					if st := r.status(&q); st != s.status {
						t.Fatalf("%s: status %d, want %d", s.name, st, s.status)
					}
					if n, ok := used[q.head]; !ok || n != uint32(q.in+1) {
						t.Fatalf("%s: used %v (head %d), want length %d", s.name, used, q.head, q.in+1)
					}
					if s.want != nil && !bytes.Equal(r.data(0, &q)[:len(s.want)], s.want) {
						t.Fatalf("%s: read other data", s.name)
					}
				}
				if r.dev.Err() != nil {
					t.Fatal(r.dev.Err())
				}
				// What QEMU reads from the image is what the requests
				// that succeeded wrote.
				model := make([]byte, diskSize)
				copy(model[2048*512:], data)
				clear(model[2056*512 : 2080*512])
				copy(model[last*512:], data[:4096])
				closeDisk()
				qemuCheck(t, format, path)
				if got := qemuRaw(t, format, path); !bytes.Equal(got, model) {
					t.Fatalf("image content differs from what the requests wrote (first difference at byte %d)", firstDiff(got, model))
				}
			})
		}
	}
}

// TestReadOnly: a read-only device offers RO, reads, and fails every
// write-like request with IOERR.
func TestReadOnly(t *testing.T) {
	checkFds(t)
	path := image(t, "raw", diskSize)
	r := newRig(t, open(t, "raw", path, true), virtioblk.Config{ReadOnly: true}, 0)
	if r.dev.Features()&virtioblk.FeatureRO == 0 {
		t.Fatal("RO not offered")
	}
	for _, tc := range []struct {
		q      req
		status byte
	}{
		{req{typ: virtioblk.TypeIn, sector: 0, in: 4096}, virtioblk.StatusOK},
		{req{typ: virtioblk.TypeOut, sector: 0, out: make([]byte, 512)}, virtioblk.StatusIOErr},
		{req{typ: virtioblk.TypeDiscard, out: segment(0, 8, 0)}, virtioblk.StatusIOErr},
		{req{typ: virtioblk.TypeWriteZeroes, out: segment(0, 8, 0)}, virtioblk.StatusIOErr},
		{req{typ: virtioblk.TypeFlush}, virtioblk.StatusOK},
	} {
		q := tc.q
		r.add(0, &q, false)
		r.serve(0)
		if st := r.status(&q); st != tc.status {
			t.Errorf("type %d: status %d, want %d", q.typ, st, tc.status)
		}
	}
}

// TestBadRequests: chains that are no virtio-blk request put the device
// in needs-reset (an error from Serve, nothing pushed, nothing written
// to the disk), as QEMU's virtio_error; Reset clears it.
func TestBadRequests(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func(r *rig) []uint64 // buffers the device must not have written
	}{
		{"no writable buffer", func(r *rig) []uint64 {
			d := r.drv[0]
			hdr := d.Alloc(16)
			binary.LittleEndian.PutUint32(d.Bytes(hdr, 16), virtioblk.TypeIn)
			d.WriteDesc(d.DescGPA, 0, hdr, 16, 0, 0)
			d.Publish(0)
			return nil
		}},
		{"header in a writable buffer", func(r *rig) []uint64 {
			d := r.drv[0]
			hdr, st := d.Alloc(16), d.Alloc(1)
			d.Bytes(st, 1)[0] = 0xee
			d.WriteDesc(d.DescGPA, 0, hdr, 16, 2|1, 1)
			d.WriteDesc(d.DescGPA, 1, st, 1, 2, 0)
			d.Publish(0)
			return []uint64{st}
		}},
		{"short header", func(r *rig) []uint64 {
			d := r.drv[0]
			hdr, st := d.Alloc(16), d.Alloc(1)
			d.Bytes(st, 1)[0] = 0xee
			d.WriteDesc(d.DescGPA, 0, hdr, 12, 1, 1)
			d.WriteDesc(d.DescGPA, 1, st, 1, 2, 0)
			d.Publish(0)
			return []uint64{st}
		}},
		{"loop", func(r *rig) []uint64 {
			d := r.drv[0]
			hdr := d.Alloc(16)
			d.WriteDesc(d.DescGPA, 0, hdr, 16, 1, 1)
			d.WriteDesc(d.DescGPA, 1, hdr, 16, 1, 0)
			d.Publish(0)
			return nil
		}},
		{"data outside guest memory", func(r *rig) []uint64 {
			d := r.drv[0]
			hdr, st := d.Alloc(16), d.Alloc(1)
			d.Bytes(st, 1)[0] = 0xee
			d.WriteDesc(d.DescGPA, 0, hdr, 16, 1, 1)
			d.WriteDesc(d.DescGPA, 1, memSize-512, 4096, 2|1, 2)
			d.WriteDesc(d.DescGPA, 2, st, 1, 2, 0)
			d.Publish(0)
			return []uint64{st}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkFds(t)
			r := newRig(t, open(t, "raw", image(t, "raw", diskSize), false), virtioblk.Config{}, 0)
			untouched := tc.build(r)
			err := r.dev.Serve(r.q[0], nil)
			if !errors.Is(err, virtq.ErrNeedsReset) {
				t.Fatalf("Serve: %v, want a needs-reset error", err)
			}
			if err2 := r.dev.Serve(r.q[0], nil); !errors.Is(err2, virtq.ErrNeedsReset) {
				t.Fatalf("Serve again: %v", err2)
			}
			r.dev.Drain()
			if u := r.used(0); len(u) != 0 {
				t.Fatalf("used elements %v for a bad request", u)
			}
			for _, g := range untouched {
				if b := r.drv[0].Bytes(g, 1)[0]; b != 0xee {
					t.Fatalf("device wrote %#x at %#x", b, g)
				}
			}
			r.dev.Reset()
			if r.dev.Err() != nil {
				t.Fatal("Reset left the device broken")
			}
		})
	}
}

// TestMultiqueue: requests from four queues, each full, are in flight
// at once (each queue served from its own goroutine, -race), complete,
// and land where they were aimed; Drain waits for all of them.
func TestMultiqueue(t *testing.T) {
	for _, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) {
			checkFds(t)
			needQemu(t)
			path := image(t, format, diskSize)
			const nq, depth, bs = 4, 64, 4096
			disk, closeDisk := openClose(t, format, path, false)
			r := newRig(t, disk, virtioblk.Config{NumQueues: nq, QueueSize: 512, WriteCache: true}, 0)
			reqs := make([][]req, nq)
			for qi := range nq {
				for i := range depth {
					sector := uint64((qi*depth + i) * bs / 512)
					reqs[qi] = append(reqs[qi], req{typ: virtioblk.TypeOut, sector: sector, out: bytes.Repeat([]byte{fill(qi, i)}, bs), split: 1024})
				}
				for i := range reqs[qi] {
					r.add(qi, &reqs[qi][i], qi%2 == 1)
				}
			}
			var wg sync.WaitGroup
			for qi := range nq {
				wg.Go(func() {
					if err := r.dev.Serve(r.q[qi], func() { r.kick <- qi }); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			r.dev.Drain()
			if n := r.dev.InFlight(); n != 0 {
				t.Fatalf("%d in flight after Drain", n)
			}
			for qi := range nq {
				if u := r.used(qi); len(u) != depth {
					t.Fatalf("queue %d: %d used, want %d", qi, len(u), depth)
				}
				for i := range reqs[qi] {
					if st := r.drv[qi].Bytes(reqs[qi][i].statusGPA, 1)[0]; st != 0 {
						t.Fatalf("queue %d request %d: status %d", qi, i, st)
					}
				}
			}
			if len(r.kick) == 0 {
				t.Fatal("no interrupt")
			}
			// Read everything back through the device, on every queue
			// at once, then check it with qemu-io below.
			rd := make([][]req, nq)
			for qi := range nq {
				for i := range depth {
					rd[qi] = append(rd[qi], req{typ: virtioblk.TypeIn, sector: uint64((qi*depth + i) * bs / 512), in: bs, split: 512})
					r.add(qi, &rd[qi][i], true)
				}
			}
			for qi := range nq {
				wg.Go(func() { r.dev.Serve(r.q[qi], nil) })
			}
			wg.Wait()
			r.dev.Drain()
			for qi := range nq {
				r.used(qi)
				for i := range rd[qi] {
					if !bytes.Equal(r.data(qi, &rd[qi][i]), bytes.Repeat([]byte{fill(qi, i)}, bs)) {
						t.Fatalf("queue %d request %d read other data", qi, i)
					}
				}
			}
			closeDisk()
			qemuCheck(t, format, path)
			var ranges [][3]int64
			for qi := range nq {
				for i := range depth {
					ranges = append(ranges, [3]int64{int64((qi*depth + i) * bs), bs, int64(fill(qi, i))})
				}
			}
			qemuRead(t, format, path, ranges)
		})
	}
}

func fill(qi, i int) byte { return byte(qi*64 + i + 1) }

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
