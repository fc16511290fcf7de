package qcow2

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/faultdisk"
	"minivmm/internal/fdtest"
)

// TestENOSPCAnyWrite: a workload (writes, zero writes, discards, a
// compressed write, growth) on images of several kinds, where one write
// to the file — the k-th, for k across the whole run — fails with ENOSPC.
// The request that hit it fails; the image, written back once the fault
// has passed, checks without a leak or a corruption.
func TestENOSPCAnyWrite(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	for _, tc := range []struct{ name, opts string }{
		{"4k", "cluster_size=4k"},
		{"512 lazy", "cluster_size=512,lazy_refcounts=on"},
		{"64k extended L2", "cluster_size=64k,extended_l2=on"},
		{"4k snapshot", "cluster_size=4k"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			snapshot := tc.name == "4k snapshot"
			total := enospcRun(t, tc.opts, snapshot, -1)
			if total < 20 {
				t.Fatalf("only %d writes in the run", total)
			}
			for k := int64(0); k < total; k += max(1, total/40) {
				enospcRun(t, tc.opts, snapshot, k)
			}
		})
	}
}

// enospcRun runs the workload with the k-th file write failing (k < 0:
// none) and checks the image; it returns how many writes the file took.
func enospcRun(t *testing.T, opts string, snapshot bool, k int64) int64 {
	t.Helper()
	g, n, q, d := faultImage(t, opts, "4M")
	defer g.Close()
	if snapshot {
		if _, err := n.WriteAt(bytes.Repeat([]byte{9}, 1<<20), 0); err != nil {
			t.Fatal(err)
		}
		if err := q.DropWriter(); err != nil {
			t.Fatal(err)
		}
		b := enospcSnapshot(t, d.Bytes())
		g.Close()
		d = faultdisk.Load(b)
		g = parallelFixture(t)
		d.Install(g, "fault")
		var err error
		if n, q, err = openCaptureOpts(g, block.Options{"driver": "qcow2", "read-only": false, "discard": "unmap",
			"file": block.Options{"driver": "fault"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := g.Attach("", n, block.Perm{Write: true}); err != nil {
			t.Fatal(err)
		}
	}
	before := d.Count(faultdisk.Write)
	var r *faultdisk.Rule
	if k >= 0 {
		r = d.AddRule(&faultdisk.Rule{Kinds: faultdisk.Write, After: k, Times: 1, Err: unix.ENOSPC})
	}
	rnd := rand.New(rand.NewPCG(5, 5))
	failed := 0
	do := func(what string, err error) {
		switch {
		case err == nil:
		case errors.Is(err, unix.ENOSPC):
			failed++
		default:
			t.Fatalf("k=%d: %s: %v", k, what, err)
		}
	}
	for i := range 60 {
		off := rnd.Int64N(4<<20 - 70000)
		l := 1 + rnd.Int64N(65536)
		switch rnd.IntN(6) {
		case 0, 1, 2:
			_, err := n.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, int(l)), off)
			do("write", err)
		case 3:
			do("write-zeroes", n.WriteZeroes(off, l, true))
		case 4:
			do("discard", n.Discard(off, l))
		default:
			do("flush", n.Flush())
		}
	}
	if cw, ok := n.Image().(interface {
		WriteCompressed([]byte, int64) error
	}); ok && !q.extL2 {
		err := cw.WriteCompressed(bytes.Repeat([]byte("abc"), int(q.clusterSize)/3+1)[:q.clusterSize], 3<<20)
		if !errors.Is(err, ErrCompressedTarget) {
			do("compressed write", err)
		}
	}
	if err := n.Truncate(64 << 20); err != nil {
		do("grow", err)
	} else {
		_, err := n.WriteAt(bytes.Repeat([]byte{0xee}, 8192), 60<<20)
		do("write after growth", err)
	}
	if k >= 0 && r.Fired() == 0 {
		return 0
	}
	if err := q.DropWriter(); err != nil {
		t.Fatalf("k=%d: write-back after the fault passed: %v", k, err)
	}
	if st, out := qemuCheckBytes(t, d.Bytes()); st != 0 {
		t.Fatalf("k=%d (%d requests failed): qemu-img check exit %d:\n%.3000s", k, failed, st, out)
	}
	return d.Count(faultdisk.Write) - before
}

// enospcSnapshot takes an internal snapshot of image bytes b with
// qemu-img snapshot -c, so that the workload copies shared clusters.
func enospcSnapshot(t *testing.T, b []byte) []byte {
	t.Helper()
	p := writeTemp(t, "snap.qcow2", b)
	run(t, "", "qemu-img", "snapshot", "-c", "s", p)
	return readFileT(t, p)
}

func readFileT(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
