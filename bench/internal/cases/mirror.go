package cases

import (
	"fmt"
	"os"
	"time"

	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/block/qcow2"
)

// Mirror times blockdev-mirror (sync=full, of the chain's top into a new
// image) and active block-commit (of top into base) at speed 0, minivmm
// against QEMU, on the jobs case's chain: the copy (command to
// BLOCK_JOB_READY) and the switch (block-job-complete to
// BLOCK_JOB_COMPLETED). The writer's latency during a mirror is the
// jobs case's.
func Mirror(e *harness.Env, s *report.Section) error {
	size, data := chainSizes(e)
	ref := e.Path("mirror-ref")
	if err := os.MkdirAll(ref, 0o700); err != nil {
		return err
	}
	if err := jobsChain(ref, size, data); err != nil {
		return err
	}
	sides := vmmSides(e)
	kinds := []string{"mirror", "active commit"}
	type key struct{ side, kind string }
	copySecs, pivotSecs := map[key][]float64{}, map[key][]float64{}
	err := harness.WithT("mirror", func(t *harness.T) {
		for rep := range e.Reps {
			for k := range sides {
				sd := sides[(k+rep)%len(sides)]
				for _, kind := range kinds {
					dir := e.Path(fmt.Sprintf("mirror-%d-%d-%d", rep, k, len(kind)))
					if err := os.MkdirAll(dir, 0o700); err != nil {
						t.Fatalf("%v", err)
					}
					for _, img := range []string{"base", "mid", "top"} {
						if _, err := harness.Exec("cp", ref+"/"+img+".qcow2", dir); err != nil {
							t.Fatalf("%v", err)
						}
					}
					if err := createQcow2(dir+"/tgt.qcow2", qcow2.CreateOptions{Size: uint64(size)}); err != nil {
						t.Fatalf("%v", err)
					}
					v := startVMM(t, sd.bin)
					for _, n := range []struct{ name, backing string }{{"base", ""}, {"mid", "base"}, {"top", "mid"}, {"tgt", ""}} {
						o := map[string]any{"driver": "qcow2", "node-name": n.name,
							"file": map[string]any{"driver": "file", "filename": dir + "/" + n.name + ".qcow2"}}
						if n.backing != "" {
							o["backing"] = n.backing
						}
						if n.name == "base" || n.name == "mid" {
							o["read-only"] = true
						}
						v.do("blockdev-add", o)
					}
					start := time.Now()
					if kind == "mirror" {
						v.do("blockdev-mirror", map[string]any{"job-id": "j", "device": "top", "target": "tgt", "sync": "full"})
					} else {
						v.do("block-commit", map[string]any{"job-id": "j", "device": "top"})
					}
					v.c.Event("BLOCK_JOB_READY", 10*time.Minute)
					copySecs[key{sd.name, kind}] = append(copySecs[key{sd.name, kind}], time.Since(start).Seconds())
					start = time.Now()
					v.do("block-job-complete", map[string]any{"device": "j"})
					if ev := v.c.Event("BLOCK_JOB_COMPLETED", time.Minute); ev["data"].(map[string]any)["error"] != nil {
						t.Fatalf("%s on %s: %v", kind, sd.name, ev)
					}
					pivotSecs[key{sd.name, kind}] = append(pivotSecs[key{sd.name, kind}], time.Since(start).Seconds())
					v.do("quit", nil)
					os.RemoveAll(dir)
				}
			}
		}
	})
	if err != nil {
		return err
	}
	s.Text = fmt.Sprintf("The jobs case's chain (%d MiB qcow2 images, mid holding %d MiB): `blockdev-mirror` sync=full of top "+
		"into a new qcow2 image, and active `block-commit` of top into base, speed 0, one VMM per run "+
		"(`-machine none -nodefaults`), on fresh copies; copy = command to BLOCK_JOB_READY, "+
		"switch = `block-job-complete` to BLOCK_JOB_COMPLETED; %d rounds, the VMMs alternating; ratios within each round. "+
		"Copy throughput is mid's and top's data (%d MiB; mirror reads the rest as zeroes) over the copy's time. "+
		"A writer's latency during a mirror is in the jobs case's table.", size>>20, data>>20, e.Reps, (data+4<<20)>>20)
	s.Commands = []string{reportCmd(e, "mirror")}
	t := s.Table("", "job", "phase", "minivmm", "QEMU", "minivmm MiB/s", "QEMU MiB/s", "QEMU time / minivmm time")
	for _, kind := range kinds {
		for _, ph := range []struct {
			name string
			secs map[key][]float64
		}{{"copy", copySecs}, {"switch", pivotSecs}} {
			m, q := ph.secs[key{"minivmm", kind}], ph.secs[key{"QEMU", kind}]
			rate := func(xs []float64) string {
				if ph.name != "copy" {
					return "–"
				}
				out := make([]float64, len(xs))
				for i, x := range xs {
					out[i] = float64((data+4<<20)>>20) / x
				}
				return num(out)
			}
			qd, qr, r := qemuSysNote(e), qemuSysNote(e), "–"
			if e.QemuSys != "" {
				qd, qr, r = dur(q), rate(q), ratio(ratiosOf(q, m))
				point(s, "mirror-"+ph.name, kind, "QEMU", q)
			}
			point(s, "mirror-"+ph.name, kind, "minivmm", m)
			t.Add(kind, ph.name, dur(m), qd, rate(m), qr, r)
		}
	}
	return nil
}
