package qcow2

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"minivmm/block"
	"minivmm/block/faultdisk"
)

// TestPowerLossEmptyWhole crashes the power at every point of MakeEmpty
// rewriting the metadata whole (make_completely_empty): every state
// reads each cluster as it was or as zeroes, a state not marked dirty
// checks clean, and check -r all makes every state clean. The end state
// is empty, clean and as short as QEMU leaves it.
func TestPowerLossEmptyWhole(t *testing.T) {
	needQemu(t)
	for _, tc := range []struct {
		name   string
		kind   plKind
		resize string // grown first, moving the L1 table off cluster 3
	}{
		{"4k", plKind{opts: "cluster_size=4096", size: 1 << 20}, ""},
		{"64k-refcount1", plKind{opts: "refcount_bits=1", size: 8 << 20}, ""},
		{"lazy", plKind{opts: "cluster_size=4096,lazy_refcounts=on", size: 1 << 20}, ""},
		{"moved-l1", plKind{opts: "cluster_size=512", size: 1 << 20}, "4M"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tc.kind.createImage(t, dir)
			if tc.resize != "" {
				run(t, dir, "qemu-img", "resize", "-f", "qcow2", path, tc.resize)
			}
			qemuIO(t, path, "write -P 0x33 4096 65536", "write -c -P 0x44 512k 64k", "write -P 0x55 900k 8k")
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
			f, err := g.Add(block.Options{"driver": "qcow2", "read-only": false,
				"file": block.Options{"driver": "fault", "filename": path}})
			if err != nil {
				t.Fatal(err)
			}
			b, err := g.Attach("", f, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			img := f.Image().(*image)
			if !img.canEmptyWhole() {
				t.Fatal("not emptied whole")
			}
			if err := img.MakeEmpty(); err != nil {
				t.Fatal(err)
			}
			// Writable again at once, on the new metadata.
			if _, err := f.WriteAt(bytes.Repeat([]byte{0x66}, 4096), 8192); err != nil {
				t.Fatal(err)
			}
			g.Detach(b)
			if err := g.Delete(f.Name()); err != nil {
				t.Fatal(err)
			}
			end := d.Bytes()
			want := make([]byte, len(before))
			copy(want[8192:], bytes.Repeat([]byte{0x66}, 4096))
			if got := readState(t, path, end); !bytes.Equal(got, want) {
				t.Fatal("the emptied image reads wrong")
			}
			if res, err := checkState(end); err != nil || res.Corruptions+res.Leaks+res.CheckErrors != 0 {
				t.Fatalf("the emptied image checks: %+v %v", res, err)
			}
			states, points, fail := sweepCrashStates(d.Journal(), rand.New(rand.NewPCG(5, 6)), func(st []byte) error {
				got, err := stateData(path, st)
				if err != nil {
					return err
				}
				for off := 0; off < len(got); off += 4096 {
					c := got[off : off+4096]
					if !bytes.Equal(c, before[off:off+4096]) && !bytes.Equal(c, want[off:off+4096]) && !bytes.Equal(c, make([]byte, 4096)) {
						return fmt.Errorf("cluster at %d reads neither as before nor as emptied", off)
					}
				}
				h, err := parseHeader(st)
				if err != nil {
					return err
				}
				if h.IncompatibleFeatures&incompatDirty == 0 {
					res, err := checkState(st)
					if err != nil {
						return err
					}
					if res.Corruptions+res.CheckErrors != 0 {
						return fmt.Errorf("a clean state checks: %+v", res)
					}
				}
				return repairState(st)
			})
			if fail != nil {
				t.Fatal(fail)
			}
			if points < 4 {
				t.Fatalf("only %d crash points", points)
			}
			t.Logf("%d states at %d crash points", states, points)
		})
	}
}
