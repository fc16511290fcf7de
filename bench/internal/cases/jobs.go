package cases

import (
	"fmt"
	"math/rand"
	"os"
	"slices"
	"time"

	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/block"
	"minivmm/block/jobs"
	"minivmm/block/qcow2"
)

// Jobs times block-commit of an intermediate image and block-stream at
// speed 0 on the same chain, minivmm against QEMU: from the command to
// BLOCK_JOB_COMPLETED, fresh copies of the chain for each run.
func Jobs(e *harness.Env, s *report.Section) error {
	size, data := int64(256<<20), int64(192<<20)
	if e.Quick {
		size, data = 64<<20, 48<<20
	}
	ref := e.Path("jobs-ref")
	if err := os.MkdirAll(ref, 0o700); err != nil {
		return err
	}
	if err := jobsChain(ref, size, data); err != nil {
		return err
	}
	sides := vmmSides(e)
	kinds := []string{"commit", "stream"}
	type key struct{ side, kind string }
	secs := map[key][]float64{}
	err := harness.WithT("jobs", func(t *harness.T) {
		for rep := range e.Reps {
			for k := range sides {
				sd := sides[(k+rep)%len(sides)]
				for _, kind := range kinds {
					dir := e.Path(fmt.Sprintf("jobs-%d-%d-%s", rep, k, kind))
					if err := os.MkdirAll(dir, 0o700); err != nil {
						t.Fatalf("%v", err)
					}
					for _, img := range []string{"base", "mid", "top"} {
						if _, err := harness.Exec("cp", ref+"/"+img+".qcow2", dir); err != nil {
							t.Fatalf("%v", err)
						}
					}
					v := startVMM(t, sd.bin)
					for _, n := range []struct{ name, backing string }{{"base", ""}, {"mid", "base"}, {"top", "mid"}} {
						o := map[string]any{"driver": "qcow2", "node-name": n.name,
							"file": map[string]any{"driver": "file", "filename": dir + "/" + n.name + ".qcow2"}}
						if n.backing != "" {
							o["backing"] = n.backing
						}
						if n.name != "top" {
							o["read-only"] = true
						}
						v.do("blockdev-add", o)
					}
					args := map[string]any{"job-id": "j", "device": "top", "top-node": "mid", "base-node": "base"}
					if kind == "stream" {
						args = map[string]any{"job-id": "j", "device": "top", "base-node": "base"}
					}
					start := time.Now()
					v.do("block-"+kind, args)
					if ev := v.c.Event("BLOCK_JOB_COMPLETED", 10*time.Minute); ev["data"].(map[string]any)["error"] != nil {
						t.Fatalf("%s on %s: %v", kind, sd.name, ev)
					}
					secs[key{sd.name, kind}] = append(secs[key{sd.name, kind}], time.Since(start).Seconds())
					v.do("quit", nil)
					os.RemoveAll(dir)
				}
			}
		}
	})
	if err != nil {
		return err
	}
	s.Text = fmt.Sprintf("A chain base <- mid <- top of %d MiB qcow2 images, mid holding %d MiB of data, base and top some; "+
		"`block-commit` of mid into base and `block-stream` of mid into top (base-node base), speed 0, one VMM per run "+
		"(`-machine none -nodefaults`), timed from the command to BLOCK_JOB_COMPLETED, on fresh copies of the chain; "+
		"%d rounds, the VMMs alternating. Throughput is mid's data over that time.", size>>20, data>>20, e.Reps)
	s.Commands = []string{reportCmd(e, "jobs")}
	t := s.Table("", "job", "minivmm", "QEMU", "minivmm MiB/s", "QEMU MiB/s", "QEMU time / minivmm time")
	for _, kind := range kinds {
		m, q := secs[key{"minivmm", kind}], secs[key{"QEMU", kind}]
		rate := func(xs []float64) []float64 {
			out := make([]float64, len(xs))
			for i, x := range xs {
				out[i] = float64(data>>20) / x
			}
			return out
		}
		qd, qr, r := qemuSysNote(e), qemuSysNote(e), "–"
		if e.QemuSys != "" {
			qd, qr = dur(q), num(rate(q))
			r = ratio(ratiosOf(q, m))
			point(s, "jobs-throughput", kind, "QEMU", rate(q))
		}
		point(s, "jobs-throughput", kind, "minivmm", rate(m))
		t.Add(kind, dur(m), qd, num(rate(m)), qr, r)
	}
	return writerLatency(e, s, ref)
}

// writerLatency times 4 KiB writes to the top of the chain, in process,
// with no job, during a commit of mid into base, and during a stream into
// the top (whose copies hold ranges of the top against writes); each
// round reports the median and the 99th percentile of its writes.
func writerLatency(e *harness.Env, s *report.Section, ref string) error {
	modes := []string{"no job", "commit", "stream"}
	med50, p99 := map[string][]float64{}, map[string][]float64{}
	for rep := range e.Reps {
		for _, mode := range modes {
			dir := e.Path(fmt.Sprintf("jobs-lat-%d", rep))
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			for _, img := range []string{"base", "mid", "top"} {
				if _, err := harness.Exec("cp", ref+"/"+img+".qcow2", dir); err != nil {
					return err
				}
			}
			lat, err := latencyRun(dir, mode)
			os.RemoveAll(dir)
			if err != nil {
				return err
			}
			slices.Sort(lat)
			med50[mode] = append(med50[mode], lat[len(lat)/2])
			p99[mode] = append(p99[mode], lat[len(lat)*99/100])
		}
	}
	t := s.Table("4 KiB writes to the top while a job runs (in process, minivmm)", "job", "median", "p99", "median / no job")
	for _, mode := range modes {
		t.Add(mode, dur(med50[mode]), dur(p99[mode]), ratio(ratiosOf(med50[mode], med50["no job"])))
	}
	s.Note("Writer latency: one goroutine writing 4 KiB at random 4 KiB-aligned offsets of the top, "+
		"back to back, from the job's start to its end (2000 writes with no job); %d rounds.", e.Reps)
	return nil
}

// latencyRun opens the chain in dir, starts the job mode names and
// times 4 KiB writes to the top until it ends.
func latencyRun(dir, mode string) ([]float64, error) {
	g := newGraph()
	defer g.close()
	open := func(name, backing string, write bool) (*block.Node, error) {
		o := block.Options{"driver": "qcow2", "node-name": name, "read-only": !write,
			"file": block.Options{"driver": "file", "filename": dir + "/" + name + ".qcow2"}}
		if backing != "" {
			o["backing"] = backing
		}
		return g.open(o, write)
	}
	base, err := open("base", "", false)
	if err != nil {
		return nil, err
	}
	mid, err := open("mid", "base", false)
	if err != nil {
		return nil, err
	}
	top, err := open("top", "mid", true)
	if err != nil {
		return nil, err
	}
	m := jobs.NewManager(nil)
	var done <-chan struct{} = make(chan struct{})
	switch mode {
	case "commit":
		j, err := m.Start(jobs.Spec{ID: "j", Type: "commit", AutoFinalize: true, AutoDismiss: true},
			&jobs.Commit{Graph: g.g, Top: mid, Base: base})
		if err != nil {
			return nil, err
		}
		done = j.Done()
	case "stream":
		j, err := m.Start(jobs.Spec{ID: "j", Type: "stream", AutoFinalize: true, AutoDismiss: true},
			&jobs.Stream{Graph: g.g, Top: top, Base: base})
		if err != nil {
			return nil, err
		}
		done = j.Done()
	}
	buf := make([]byte, 4096)
	rng := rand.New(rand.NewSource(1))
	var lat []float64
	for i := 0; ; i++ {
		if mode == "no job" && i == 2000 {
			break
		}
		select {
		case <-done:
			if mode != "no job" {
				return lat, nil
			}
		default:
		}
		off := rng.Int63n(top.Length()/4096) * 4096
		start := time.Now()
		if _, err := top.WriteAt(buf, off); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(start).Seconds())
	}
	return lat, nil
}

// ratiosOf is a[i]/b[i] for each pair of one round.
func ratiosOf(a, b []float64) []float64 {
	n := min(len(a), len(b))
	out := make([]float64, n)
	for i := range n {
		out[i] = a[i] / b[i]
	}
	return out
}

// jobsChain writes base, mid and top (size bytes each) in dir: mid holds
// data bytes of a pattern, base and top a few MiB at either end.
func jobsChain(dir string, size, data int64) error {
	mk := func(name, backing string) error {
		o := qcow2.CreateOptions{Size: uint64(size)}
		if backing != "" {
			o.BackingFile, o.BackingFormat = backing+".qcow2", "qcow2"
		}
		return createQcow2(dir+"/"+name+".qcow2", o)
	}
	if err := mk("base", ""); err != nil {
		return err
	}
	if err := mk("mid", "base"); err != nil {
		return err
	}
	if err := mk("top", "mid"); err != nil {
		return err
	}
	g := newGraph()
	defer g.close()
	fill := func(name string, off, n int64) error {
		node, err := g.open(block.Options{"driver": "qcow2", "backing": nil,
			"file": block.Options{"driver": "file", "filename": dir + "/" + name + ".qcow2"}}, true)
		if err != nil {
			return err
		}
		buf := make([]byte, 1<<20)
		for o := off; o < off+n; o += int64(len(buf)) {
			for i := range buf {
				buf[i] = byte((int64(i)*7+o>>20)%255 + 1)
			}
			if _, err := node.WriteAt(buf[:min(int64(len(buf)), off+n-o)], o); err != nil {
				return err
			}
		}
		return node.Flush()
	}
	if err := fill("base", 0, 4<<20); err != nil {
		return err
	}
	if err := fill("mid", 0, data); err != nil {
		return err
	}
	return fill("top", size-(4<<20), 4<<20)
}
