package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
	"minivmm/block"
	"minivmm/block/faultdisk"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// vmRegion is a range of the VM state area and its contents before and
// after the operation under test.
type vmRegion struct {
	pos           int64
	before, after []byte
}

// TestVMStatePowerLoss writes VM state over a cluster an internal
// snapshot shares (COW of the rest of the cluster) and past the L1
// table's reach (the table grows), and crashes the power at every point
// (every prefix of the writes in flight and random subsets, torn too):
// each state opens, check finds no corruption, the guest data is as it
// was and each region of VM state reads wholly as before or as after.
func TestVMStatePowerLoss(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "v.qcow2")
	// 4k clusters: one L1 entry maps 2M, the VM state starts at 2M.
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", path, "1M")
	qemuIO(t, path, "write -P 5 0 64k", "write -b -P 7 0 8k")
	run(t, dir, "qemu-img", "snapshot", "-c", "s", path)
	regions := []vmRegion{
		{pos: 512, before: bytes.Repeat([]byte{7}, 3584), after: bytes.Repeat([]byte{8}, 3584)},
		{pos: 0, before: bytes.Repeat([]byte{7}, 512), after: bytes.Repeat([]byte{7}, 512)},      // the rest of the COW'd cluster
		{pos: 4096, before: bytes.Repeat([]byte{7}, 1024), after: bytes.Repeat([]byte{7}, 1024)}, // the next cluster, untouched
		{pos: 5 << 20, before: make([]byte, 8192), after: bytes.Repeat([]byte{9}, 8192)},
	}
	d, err := faultdisk.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	guest := readState(t, path, d.Bytes())
	d.Record()
	g := fixture(t)
	if err := d.Install(g, "fault"); err != nil {
		t.Fatal(err)
	}
	n, err := g.Add(plOptions(path, true))
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.WriteVMState(regions[0].after, regions[0].pos); err != nil {
		t.Fatal(err)
	}
	if _, err := n.WriteVMState(regions[3].after, regions[3].pos); err != nil {
		t.Fatal(err)
	}
	// The node's flush covers VM state writes: what is durable then is
	// the result, before any close writes back.
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := judgeVMState(path, d.Durable(), guest, regions, true); err != nil {
		t.Fatalf("durable after flush: %v", err)
	}
	g.Detach(b)
	if err := g.Delete(n.Name()); err != nil {
		t.Fatal(err)
	}
	if err := judgeVMState(path, d.Bytes(), guest, regions, true); err != nil {
		t.Fatalf("after the writes: %v", err)
	}
	states, points, fail := sweepCrashStates(d.Journal(), rand.New(rand.NewPCG(3, 4)), func(st []byte) error {
		return judgeVMState(path, st, guest, regions, false)
	})
	if fail != nil {
		t.Fatal(fail)
	}
	if points < 2 {
		t.Fatalf("only %d crash points: the writes wrote nothing?", points)
	}
	t.Logf("%d states at %d crash points", states, points)

	// What QEMU makes of the result.
	final := writeTemp(t, "final.qcow2", d.Bytes())
	if code, out := qemuCheckStatus(t, final); code != 0 {
		t.Fatalf("qemu-img check: exit %d:\n%s", code, out)
	}
	qemuIO(t, final, "read -b -P 7 0 512", "read -b -P 8 512 3584", "read -b -P 7 4k 4k", "read -b -P 9 5M 8k", "read -b -P 0 8k 4k",
		"read -P 5 0 64k", "read -P 0 64k 960k")
}

// judgeVMState opens the state st: check finds no corruption (leaks
// allowed), the guest reads as guest, each region as before or after
// (only after, when done).
func judgeVMState(path string, st, guest []byte, regions []vmRegion, done bool) error {
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	g := block.NewGraph(reg)
	defer g.Close()
	if err := faultdisk.Own(bytes.Clone(st)).Install(g, "fault"); err != nil {
		return err
	}
	file, err := g.Add(block.Options{"driver": "fault", "read-only": true})
	if err != nil {
		return err
	}
	res, err := Check(file, io.Discard)
	if err != nil {
		return fmt.Errorf("check failed: %w", err)
	}
	if res.Corruptions > 0 || res.CheckErrors > 0 {
		return fmt.Errorf("check finds %d corruptions, %d errors", res.Corruptions, res.CheckErrors)
	}
	n, err := g.Add(plOptions(path, false))
	if err != nil {
		return fmt.Errorf("does not open: %w", err)
	}
	got := make([]byte, n.Length())
	if _, err := n.ReadAt(got, 0); err != nil {
		return fmt.Errorf("does not read: %w", err)
	}
	if !bytes.Equal(got, guest) {
		return errors.New("the guest data changed")
	}
	img := n.Image().(*image)
	for _, r := range regions {
		buf := make([]byte, len(r.after))
		if _, err := img.ReadVMState(buf, r.pos); err != nil {
			return fmt.Errorf("VM state at %d does not read: %w", r.pos, err)
		}
		if !bytes.Equal(buf, r.after) && (done || !bytes.Equal(buf, r.before)) {
			return fmt.Errorf("VM state at %d reads neither as before nor as after", r.pos)
		}
	}
	return nil
}

// TestVMStateErrors: requests QEMU refuses change nothing.
func TestVMStateErrors(t *testing.T) {
	needQemu(t)
	g := fixture(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "e.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", path, "1M")
	n, img, err := openCapture(g, path, block.Options{"read-only": false})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Attach("", n, block.Perm{Write: true}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		write bool
		pos   int64
		n     int
		want  error
	}{
		{"negative", true, -512, 512, unix.EIO},
		{"negative read", false, -512, 512, unix.EIO},
		{"past the largest L1 table", true, 1 << 51, 512, unix.EFBIG},
		{"overflow", false, 1<<63 - 512, 1024, unix.EIO},
	} {
		buf := make([]byte, tc.n)
		f := img.ReadVMState
		if tc.write {
			f = img.WriteVMState
		}
		if _, err := f(buf, tc.pos); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	if code, out := qemuCheckStatus(t, path); code != 0 {
		t.Fatalf("qemu-img check: exit %d:\n%s", code, out)
	}
}

// TestVMStateConcurrent runs guest writes, VM state writes and reads of
// both at once (under -race): each reads back what it wrote and
// qemu-img check finds the image clean.
func TestVMStateConcurrent(t *testing.T) {
	needQemu(t)
	g := fixture(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "c.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", path, "4M")
	n, err := openQcow2(g, path, block.Options{"read-only": false})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Attach("", n, block.Perm{Write: true}); err != nil {
		t.Fatal(err)
	}
	const workers, rounds, size = 4, 32, 6144 // unaligned to clusters: COW within the area
	errs := make(chan error, 2*workers)
	for w := range workers {
		for _, vm := range []bool{false, true} {
			go func() {
				errs <- func() error {
					for i := range rounds {
						p := bytes.Repeat([]byte{byte(w*rounds + i)}, size)
						off := int64(w*rounds+i) * size
						write, read := n.WriteAt, n.ReadAt
						if vm {
							write, read = n.WriteVMState, n.ReadVMState
						}
						if _, err := write(p, off); err != nil {
							return err
						}
						got := make([]byte, size)
						if _, err := read(got, off); err != nil {
							return err
						}
						if !bytes.Equal(got, p) {
							return fmt.Errorf("vm=%t: %d bytes at %d do not read back", vm, size, off)
						}
					}
					return nil
				}()
			}()
		}
	}
	for range 2 * workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	if code, out := qemuCheckStatus(t, path); code != 0 {
		t.Fatalf("qemu-img check: exit %d:\n%s", code, out)
	}
	qemuIO(t, path, "read -b -P 0 0 6144", fmt.Sprintf("read -b -P %d %d 6144", workers*rounds-1, (workers*rounds-1)*size),
		"read -P 1 6144 6144")
}
