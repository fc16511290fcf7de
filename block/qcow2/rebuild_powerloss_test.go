package qcow2

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"minivmm/block"
	"minivmm/block/faultdisk"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// TestPowerLossRebuild crashes the power at every point of check -r all
// rebuilding the refcount structure (a data cluster's refcount zeroed, a
// refcount table entry unaligned, a refcount block shared): every state
// reads as the image did, check finds either the old damage or none (the
// header switched; leaks allowed), and check -r all on it ends clean.
func TestPowerLossRebuild(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	be := binary.BigEndian
	cases := []struct {
		name   string
		break_ func(b []byte)
	}{
		{"zero refcount", func(b []byte) {
			rt := int64(be.Uint64(b[48:]))
			rb := int64(be.Uint64(b[rt:]))
			l1 := int64(be.Uint64(b[40:]))
			l2 := int64(be.Uint64(b[l1:]) & offsetMask)
			data := int64(be.Uint64(b[l2:]) & offsetMask)
			be.PutUint16(b[rb+2*(data/4096):], 0)
		}},
		{"unaligned refblock", func(b []byte) {
			rt := int64(be.Uint64(b[48:]))
			be.PutUint64(b[rt:], be.Uint64(b[rt:])|0x200)
		}},
		{"shared refblock", func(b []byte) {
			rt := int64(be.Uint64(b[48:]))
			be.PutUint64(b[rt+8:], be.Uint64(b[rt:]))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := plKind{opts: "cluster_size=4096", size: 1 << 20, snapshot: true}.createImage(t, dir)
			qemuIO(t, path, "write -P 0x33 4096 65536", "write -c -P 0x44 512k 4096")
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			tc.break_(raw)
			if err := os.WriteFile(path, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			d, err := faultdisk.LoadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			before := readState(t, path, d.Bytes())
			broken, err := checkState(d.Bytes())
			if err != nil || broken.Corruptions == 0 {
				t.Fatalf("the broken image checks: %+v %v", broken, err)
			}
			d.Record()
			g := fixture(t)
			if err := d.Install(g, "fault"); err != nil {
				t.Fatal(err)
			}
			f, err := g.Add(block.Options{"driver": "fault"})
			if err != nil {
				t.Fatal(err)
			}
			b, err := g.Attach("", f, block.Perm{Write: true, Image: true})
			if err != nil {
				t.Fatal(err)
			}
			var log bytes.Buffer
			if _, err := Repair(f, &log, FixLeaks|FixErrors); err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			if !bytes.Contains(log.Bytes(), []byte("Rebuilding refcount structure\n")) {
				t.Fatalf("no rebuild:\n%s", log.String())
			}
			g.Detach(b)
			if err := g.Delete(f.Name()); err != nil {
				t.Fatal(err)
			}
			states, points, fail := sweepCrashStates(d.Journal(), rand.New(rand.NewPCG(3, 4)), func(st []byte) error {
				got, err := stateData(path, st)
				if err != nil {
					return err
				}
				if !bytes.Equal(got, before) {
					return fmt.Errorf("reads differently")
				}
				res, err := checkState(st)
				if err != nil {
					return err
				}
				if res.Corruptions != 0 && res.Corruptions != broken.Corruptions {
					return fmt.Errorf("check finds %d corruptions (%d before the repair)", res.Corruptions, broken.Corruptions)
				}
				return repairState(st)
			})
			if fail != nil {
				t.Fatal(fail)
			}
			if points < 2 {
				t.Fatalf("only %d crash points", points)
			}
			t.Logf("%d states at %d crash points", states, points)
		})
	}
}

// checkState is qemu-img check on the image bytes st.
func checkState(st []byte) (*CheckResult, error) {
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	g := block.NewGraph(reg)
	defer g.Close()
	if err := faultdisk.Own(bytes.Clone(st)).Install(g, "fault"); err != nil {
		return nil, err
	}
	f, err := g.Add(block.Options{"driver": "fault", "read-only": true})
	if err != nil {
		return nil, err
	}
	return Check(f, io.Discard)
}

// repairState runs check -r all on the image bytes st: it must leave an
// image check finds nothing wrong with.
func repairState(st []byte) error {
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	g := block.NewGraph(reg)
	defer g.Close()
	if err := faultdisk.Own(bytes.Clone(st)).Install(g, "fault"); err != nil {
		return err
	}
	f, err := g.Add(block.Options{"driver": "fault"})
	if err != nil {
		return err
	}
	if _, err := g.Attach("", f, block.Perm{Write: true, Image: true}); err != nil {
		return err
	}
	var log bytes.Buffer
	if _, err := Repair(f, &log, FixLeaks|FixErrors); err != nil {
		return fmt.Errorf("check -r all: %w\n%s", err, log.String())
	}
	res, err := Check(f, &log)
	if err != nil {
		return err
	}
	if res.Corruptions != 0 || res.Leaks != 0 || res.CheckErrors != 0 {
		return fmt.Errorf("after check -r all: %+v\n%s", res, log.String())
	}
	return nil
}
