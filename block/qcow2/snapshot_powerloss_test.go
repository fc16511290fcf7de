package qcow2

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/block/faultdisk"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// TestPowerLossHeaderOps crashes the power at every point of an amend
// (the refcount width, compat=1.1) and of applying an internal snapshot (every
// prefix of the writes in flight and random subsets, torn too): every
// state opens, reads as before or as after the operation, and check
// finds at most leaked clusters.
func TestPowerLossHeaderOps(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	type op struct {
		name string
		kind plKind
		run  func(img *image) error
		// repairable: a crash may leave COPIED flags check reports
		// (creating and deleting, as in QEMU), which check -r all must
		// repair into a clean image.
		repairable bool
	}
	bits := func(b int) func(*image) error {
		return func(img *image) error { return img.Amend(AmendOptions{RefcountBits: &b}) }
	}
	ops := []op{
		{"refcount_bits=8", plKind{opts: "cluster_size=4096", size: 1 << 20, snapshot: true}, bits(8), false},
		{"refcount_bits=64 lazy", plKind{opts: "cluster_size=4096,lazy_refcounts=on", size: 1 << 20, snapshot: true}, bits(64), false},
		{"refcount_bits=1 512", plKind{opts: "cluster_size=512", size: 256 << 10}, bits(1), false},
		{"compat=1.1", plKind{opts: "cluster_size=4096,compat=0.10", size: 1 << 20, snapshot: true, noResize: true},
			func(img *image) error { return img.Amend(AmendOptions{Upgrade: true}) }, false},
		{"compat=1.1 refcount_bits=2", plKind{opts: "cluster_size=4096,compat=0.10", size: 1 << 20, backing: "raw"},
			func(img *image) error { b := 2; return img.Amend(AmendOptions{Upgrade: true, RefcountBits: &b}) }, false},
		{"compat=0.10", plKind{opts: "cluster_size=4096,lazy_refcounts=on", size: 1 << 20, snapshot: true},
			func(img *image) error { return img.Amend(AmendOptions{Downgrade: true}) }, false},
		{"compat=0.10 zero clusters", plKind{opts: "cluster_size=4096,lazy_refcounts=on", size: 1 << 20},
			func(img *image) error { return img.Amend(AmendOptions{Downgrade: true}) }, false},
		{"compat=0.10 zero clusters backing", plKind{opts: "cluster_size=4096", size: 1 << 20, backing: "raw"},
			func(img *image) error { return img.Amend(AmendOptions{Downgrade: true}) }, false},
		{"compat=0.10 snapshot zero clusters backing", plKind{opts: "cluster_size=4096", size: 1 << 20, backing: "raw"},
			func(img *image) error { return img.Amend(AmendOptions{Downgrade: true}) }, false},
		{"create", plKind{opts: "cluster_size=4096", size: 1 << 20, snapshot: true},
			func(img *image) error { return img.CreateSnapshot("t", time.Unix(1, 0)) }, true},
		{"delete", plKind{opts: "cluster_size=4096", size: 1 << 20, snapshot: true},
			func(img *image) error { return img.DeleteSnapshot("1", "s") }, true},
		{"apply", plKind{opts: "cluster_size=4096", size: 1 << 20, snapshot: true}, func(img *image) error { return img.ApplySnapshot("s") }, false},
		{"apply extended L2", plKind{opts: "cluster_size=16384,extended_l2=on", size: 1 << 20, snapshot: true}, func(img *image) error { return img.ApplySnapshot("1") }, false},
	}
	for _, o := range ops {
		t.Run(o.name, func(t *testing.T) {
			dir := t.TempDir()
			path := o.kind.createImage(t, dir)
			if o.kind.snapshot {
				// The active state moves on from the snapshot's.
				qemuIO(t, path, "write -P 0x33 4096 65536")
			}
			if strings.Contains(o.name, "zero clusters") {
				// Allocated and unallocated zero clusters to write out.
				qemuIO(t, path, "write -P 5 0 64k", "write -z 8k 16k", "write -z 128k 64k")
			}
			if strings.Contains(o.name, "snapshot zero") {
				// A snapshot holding them, then zero clusters of the
				// active image over clusters it shares with it.
				run(t, dir, "qemu-img", "snapshot", "-c", "z", path)
				qemuIO(t, path, "write -P 6 0 4k", "write -z 32k 8k", "write -z -u 200k 4k")
			}
			d, err := faultdisk.LoadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			before := readState(t, path, d.Bytes())
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
			if err := o.run(n.Image().(*image)); err != nil {
				t.Fatal(err)
			}
			g.Detach(b)
			if err := g.Delete(n.Name()); err != nil {
				t.Fatal(err)
			}
			after := readState(t, path, d.Bytes())
			states, points, fail := sweepCrashStates(d.Journal(), rand.New(rand.NewPCG(1, 2)), func(st []byte) error {
				return judgeHeaderOp(path, st, before, after, o.repairable)
			})
			if fail != nil {
				t.Fatal(fail)
			}
			if points < 1 {
				t.Fatalf("only %d crash points: the operation wrote nothing?", points)
			}
			t.Logf("%d states at %d crash points", states, points)
		})
	}
}

// readState is what the image in st reads as.
func readState(t *testing.T, path string, st []byte) []byte {
	t.Helper()
	got, err := stateData(path, st)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func stateData(path string, st []byte) ([]byte, error) {
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	g := block.NewGraph(reg)
	defer g.Close()
	if err := faultdisk.Own(bytes.Clone(st)).Install(g, "fault"); err != nil {
		return nil, err
	}
	n, err := g.Add(plOptions(path, false))
	if err != nil {
		return nil, fmt.Errorf("does not open: %w", err)
	}
	got := make([]byte, n.Length())
	if _, err := n.ReadAt(got, 0); err != nil {
		return nil, fmt.Errorf("does not read: %w", err)
	}
	return got, nil
}

// judgeHeaderOp: the state reads as before or after, and check finds no
// corruption (leaks allowed).
func judgeHeaderOp(path string, st, before, after []byte, repairable bool) error {
	got, err := stateData(path, st)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, before) && !bytes.Equal(got, after) {
		return fmt.Errorf("reads neither as before nor as after the operation")
	}
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
	if res.Corruptions > 0 && res.CheckErrors == 0 && repairable {
		rg := block.NewGraph(reg)
		defer rg.Close()
		if err := faultdisk.Own(bytes.Clone(st)).Install(rg, "fault"); err != nil {
			return err
		}
		wf, err := rg.Add(block.Options{"driver": "fault"})
		if err != nil {
			return err
		}
		if _, err := rg.Attach("", wf, block.Perm{Write: true, Image: true}); err != nil {
			return err
		}
		if _, err := Repair(wf, io.Discard, FixLeaks|FixErrors); err != nil {
			return fmt.Errorf("check -r all failed: %w", err)
		}
		if res, err = Check(wf, io.Discard); err != nil {
			return err
		}
		file = wf
	}
	if res.Corruptions > 0 || res.CheckErrors > 0 {
		var log bytes.Buffer
		Check(file, &log)
		return fmt.Errorf("check finds %d corruptions, %d errors:\n%s", res.Corruptions, res.CheckErrors, log.String())
	}
	return nil
}
