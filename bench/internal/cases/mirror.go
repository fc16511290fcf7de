package cases

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"time"

	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/block"
	"minivmm/block/engine"
	"minivmm/block/jobs"
	"minivmm/block/qcow2"
)

// Mirror times blockdev-mirror (sync=full, of the chain's top into a new
// image) and active block-commit (of top into base) at speed 0, minivmm
// against QEMU, on the jobs case's chain: the copy (command to
// BLOCK_JOB_READY) and the switch (block-job-complete to
// BLOCK_JOB_COMPLETED); and, in process, a guest's 4 KiB write latency
// during an active commit against the same writes with no job.
func Mirror(e *harness.Env, s *report.Section) error {
	size, data := int64(256<<20), int64(192<<20)
	if e.Quick {
		size, data = 64<<20, 48<<20
	}
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
	idle, during, err := commitWriteLatency(e, ref, size)
	if err != nil {
		return err
	}
	s.Text = fmt.Sprintf("The jobs case's chain (%d MiB qcow2 images, mid holding %d MiB): `blockdev-mirror` sync=full of top "+
		"into a new qcow2 image, and active `block-commit` of top into base, speed 0, one VMM per run "+
		"(`-machine none -nodefaults`), on fresh copies; copy = command to BLOCK_JOB_READY, "+
		"switch = `block-job-complete` to BLOCK_JOB_COMPLETED; %d rounds, the VMMs alternating. "+
		"Then, in process (QEMU cannot be driven to write without a guest here), a writer's 4 KiB random writes to the "+
		"active layer during an active commit against the same writes with no job, in the same run.", size>>20, data>>20, e.Reps)
	s.Commands = []string{reportCmd(e, "mirror")}
	t := s.Table("", "job", "phase", "minivmm", "QEMU", "QEMU time / minivmm time")
	for _, kind := range kinds {
		for _, ph := range []struct {
			name string
			secs map[key][]float64
		}{{"copy", copySecs}, {"switch", pivotSecs}} {
			m, q := ph.secs[key{"minivmm", kind}], ph.secs[key{"QEMU", kind}]
			qd, r := qemuSysNote(e), "–"
			if e.QemuSys != "" {
				qd, r = dur(q), ratio(ratiosOf(q, m))
				point(s, "mirror-"+ph.name, kind, "QEMU", q)
			}
			point(s, "mirror-"+ph.name, kind, "minivmm", m)
			t.Add(kind, ph.name, dur(m), qd, r)
		}
	}
	lt := s.Table("Writer latency (minivmm, in process)", "writes", "median", "p99", "during / idle (median)")
	lt.Add("no job", fmt.Sprint(percentile(idle, 50)), fmt.Sprint(percentile(idle, 99)), "1")
	lt.Add("during active commit", fmt.Sprint(percentile(during, 50)), fmt.Sprint(percentile(during, 99)),
		fmt.Sprintf("%.2f", float64(percentile(during, 50))/float64(percentile(idle, 50))))
	return nil
}

func percentile(xs []time.Duration, p int) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)]
}

// commitWriteLatency opens a copy of the chain in process and times
// 4 KiB writes through the active layer's backend: first with no job,
// then while an active commit runs (until it is ready).
func commitWriteLatency(e *harness.Env, ref string, size int64) (idle, during []time.Duration, err error) {
	dir := e.Path("mirror-latency")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	for _, img := range []string{"base", "mid", "top"} {
		if _, err := harness.Exec("cp", ref+"/"+img+".qcow2", dir); err != nil {
			return nil, nil, err
		}
	}
	g := newGraph()
	defer g.close()
	var base, top *block.Node
	for _, n := range []struct{ name, backing string }{{"base", ""}, {"mid", "base"}, {"top", "mid"}} {
		o := block.Options{"driver": "qcow2", "node-name": n.name,
			"file": block.Options{"driver": "file", "filename": dir + "/" + n.name + ".qcow2"}}
		if n.backing != "" {
			o["backing"] = n.backing
		}
		o["read-only"] = n.name != "top"
		node, err := g.g.Add(o)
		if err != nil {
			return nil, nil, err
		}
		if n.name == "base" {
			base = node
		}
		top = node
	}
	b, err := g.g.Attach("guest", top, block.Perm{Write: true})
	if err != nil {
		return nil, nil, err
	}
	// The same 1024 offsets throughout, written once first: both phases
	// rewrite allocated clusters, so neither pays for allocation.
	rng := rand.New(rand.NewPCG(1, 2))
	offs := make([]int64, 1024)
	for i := range offs {
		offs[i] = rng.Int64N(size/4096) * 4096
	}
	buf := make([]byte, 4096)
	next := 0
	write := func() (time.Duration, error) {
		off := offs[next%len(offs)]
		next++
		start := time.Now()
		_, err := b.WriteAt(buf, off)
		return time.Since(start), err
	}
	for range offs {
		if _, err := write(); err != nil {
			return nil, nil, err
		}
	}
	for range 4096 {
		d, err := write()
		if err != nil {
			return nil, nil, err
		}
		idle = append(idle, d)
	}
	if err := g.g.SetReadOnly(base, false); err != nil {
		return nil, nil, err
	}
	m := jobs.NewManager(nil)
	j, err := m.Start(jobs.Spec{ID: "c", Type: "commit", AutoFinalize: true, AutoDismiss: true},
		&jobs.Mirror{Graph: g.g, Source: top, Target: base, Base: base, Sync: engine.SyncFull, BaseWasRO: true})
	if err != nil {
		return nil, nil, err
	}
	for j.Status() != jobs.Ready && j.Status() != jobs.Concluded && len(during) < 200000 {
		d, err := write()
		if err != nil {
			return nil, nil, err
		}
		during = append(during, d)
	}
	if err := j.Cancel(true); err != nil {
		return nil, nil, err
	}
	select {
	case <-j.Done():
	case <-time.After(time.Minute):
		return nil, nil, fmt.Errorf("active commit did not end")
	}
	return idle, during, nil
}
