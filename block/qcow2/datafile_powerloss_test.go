package qcow2

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"minivmm/block"
	"minivmm/block/faultdisk"
)

// dfState is a crash state of both files, taken while guest operation
// op ran, after the guest's flush number flushes had completed.
type dfState struct {
	img, data []byte
	op        int
	flushes   int
}

// dfRun is a recorded run on an image with a data file: the sector
// values after each guest operation (by hash) and after each completed
// flush, and the crash states taken during it.
type dfRun struct {
	seed      maphash.Seed
	after     [][]uint64 // after[i]: every sector's hash after guest op i (after[0]: before any)
	flushedAt []int      // flushedAt[k]: the op after which flush k+1 completed (0 for the start)
	states    []dfState
}

// allowed reports whether h is a value sector s may read after a crash
// during op (with flushes flushes completed): its value at the last
// completed flush, or one it took since.
func (r *dfRun) allowed(s int64, h uint64, op, flushes int) bool {
	for i := r.flushedAt[flushes]; i <= op && i < len(r.after); i++ {
		if r.after[i][s] == h {
			return true
		}
	}
	return false
}

// dfRecord runs a random workload on a qcow2 image whose data file is
// full of junk and which has a backing file of random data (so that a
// cluster whose data is lost reads something it never held), both files
// on fault disks, taking random crash states of both disks before every
// write of the image; dropDataFlush makes the data disk's flushes
// persist nothing (a mutation the judge must catch).
func dfRecord(t *testing.T, seed uint64, dropDataFlush bool) (*dfRun, string) {
	t.Helper()
	dir := t.TempDir()
	const size, cs = 256 << 10, 4096
	base := filepath.Join(dir, "base.raw")
	rnd := rand.New(rand.NewPCG(seed, 77))
	junk := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	if err := os.WriteFile(base, junk(size), 0o600); err != nil {
		t.Fatal(err)
	}
	img, data := filepath.Join(dir, "pl.qcow2"), filepath.Join(dir, "pl.data")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,data_file="+data,
		"-b", base, "-F", "raw", img, itoa(size))
	if err := os.WriteFile(data, junk(size), 0o600); err != nil {
		t.Fatal(err)
	}
	dImg, err := faultdisk.LoadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	dData, err := faultdisk.LoadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	if dropDataFlush {
		dData.AddRule(&faultdisk.Rule{Kinds: faultdisk.Flush, Drop: true})
	}
	g := fixture(t)
	if err := dImg.Install(g, "fault"); err != nil {
		t.Fatal(err)
	}
	if err := dData.Install(g, "faultdata"); err != nil {
		t.Fatal(err)
	}
	n, err := g.Add(block.Options{"driver": "qcow2", "read-only": false, "discard": "unmap",
		"file":      block.Options{"driver": "fault", "filename": img},
		"data-file": block.Options{"driver": "faultdata", "filename": data}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	qimg := n.Image().(*image)
	if qimg.data.Name() == qimg.file.Name() {
		t.Fatal("the data file is not the data-file child")
	}
	r := &dfRun{seed: maphash.MakeSeed(), flushedAt: []int{0}}
	hashes := func(p []byte) []uint64 {
		h := make([]uint64, len(p)/sector)
		for i := range h {
			h[i] = maphash.Bytes(r.seed, p[i*sector:(i+1)*sector])
		}
		return h
	}
	r.after = append(r.after, hashes(readAll(t, n)))
	op := 0
	qimg.beforeWrite = func() {
		keep := []float64{0, 0.5, 1}[rnd.IntN(3)]
		r.states = append(r.states, dfState{
			img:  dImg.Crash(faultdisk.Random(rnd, dImg.Pending(), keep, 0.3)),
			data: dData.Crash(faultdisk.Random(rnd, dData.Pending(), keep, 0.3)),
			op:   op, flushes: len(r.flushedAt) - 1,
		})
	}
	for op = 1; op <= 120; op++ {
		off := rnd.Int64N(size/sector) * sector
		l := min(size-off, sector*(1+rnd.Int64N(2*cs/sector)))
		flush := false
		switch x := rnd.IntN(12); {
		case x < 2:
			err, flush = n.Flush(), true
		case x < 9:
			p := make([]byte, l)
			for j := range p {
				p[j] = patternByte(op, off+int64(j))
			}
			_, err = n.WriteAt(p, off)
		case x < 11:
			err = n.WriteZeroes(off, l, x == 10)
		default:
			err = n.Discard(off, l)
		}
		if err != nil {
			t.Fatalf("op %d: %v", op, err)
		}
		r.after = append(r.after, hashes(readAll(t, n)))
		if flush {
			r.flushedAt = append(r.flushedAt, op)
		}
	}
	qimg.beforeWrite = nil
	g.Detach(b)
	if err := g.Delete(n.Name()); err != nil {
		t.Fatal(err)
	}
	return r, dir
}

// judge opens every crash state (both files) read-only and checks each
// sector reads a value the model allows; every fifth state is also
// checked by qemu-img check (no corruption; leaks are allowed).
func (r *dfRun) judge(t *testing.T, dir string, qemuEvery int) error {
	t.Helper()
	img, data := filepath.Join(dir, "judge.qcow2"), filepath.Join(dir, "judge.data")
	for i, st := range r.states {
		if err := os.WriteFile(img, st.img, 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(data, st.data, 0o600); err != nil {
			return err
		}
		g := fixture(t)
		n, err := g.Add(block.Options{"driver": "qcow2", "read-only": true,
			"file":      block.Options{"driver": "file", "filename": img},
			"data-file": block.Options{"driver": "file", "filename": data}})
		if err != nil {
			return fmt.Errorf("state %d (op %d): open: %v", i, st.op, err)
		}
		buf := make([]byte, n.Length())
		_, err = n.ReadAt(buf, 0)
		g.Delete(n.Name())
		if err != nil {
			return fmt.Errorf("state %d (op %d): read: %v", i, st.op, err)
		}
		for s := int64(0); s < int64(len(buf))/sector; s++ {
			h := maphash.Bytes(r.seed, buf[s*sector:(s+1)*sector])
			if !r.allowed(s, h, st.op, st.flushes) {
				return fmt.Errorf("state %d (crash during op %d, %d flushes done): sector %d reads a value it never had since the last flush",
					i, st.op, st.flushes, s)
			}
		}
		if qemuEvery > 0 && i%qemuEvery == 0 {
			out, err := exec.Command("qemu-img", "check", "--image-opts",
				"driver=qcow2,file.filename="+img+",data-file.driver=file,data-file.filename="+data).CombinedOutput()
			if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 3) {
				return fmt.Errorf("state %d (op %d): qemu-img check: %v\n%s", i, st.op, err, out)
			}
		}
	}
	return nil
}

// TestDataFilePowerLoss: a power loss at any write of an image with a
// data file leaves both files so that the image reads, in every sector,
// what it held at the last flush or was written since, and qemu-img
// check finds no corruption: data (and what copy-on-write copied from
// the backing file) reaches the data file's disk before the L2 entries
// that point to it reach the image's.
func TestDataFilePowerLoss(t *testing.T) {
	needQemu(t)
	seeds := 3
	if testing.Short() {
		seeds = 1
	}
	states := 0
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		r, dir := dfRecord(t, seed, false)
		if err := r.judge(t, dir, 7); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		states += len(r.states)
	}
	t.Logf("%d crash states judged", states)
}

// TestDataFilePowerLossFindsDroppedFlush: the judge catches a data file
// whose flushes do nothing (metadata then reaches the disk before the
// data it points to).
func TestDataFilePowerLossFindsDroppedFlush(t *testing.T) {
	needQemu(t)
	for seed := uint64(1); seed <= 5; seed++ {
		r, dir := dfRecord(t, seed, true)
		if err := r.judge(t, dir, 0); err != nil {
			t.Logf("seed %d: caught: %v", seed, err)
			return
		}
	}
	t.Fatal("no crash state showed the dropped data file flushes")
}
