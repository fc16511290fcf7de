package cases

import (
	"fmt"
	"os"
	"time"

	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/block"
	"minivmm/block/qcow2"
)

// The chain the job cases run on: base <- mid <- top of chainSize bytes,
// mid holding chainData bytes (less in the quick mode).
const chainSize, chainData = 1 << 30, 768 << 20

func chainSizes(e *harness.Env) (size, data int64) {
	if e.Quick {
		return 64 << 20, 48 << 20
	}
	return chainSize, chainData
}

// Jobs times block-commit of an intermediate image and block-stream at
// speed 0 on the same chain, minivmm against QEMU: from the command to
// BLOCK_JOB_COMPLETED, fresh copies of the chain for each run; then a
// writer's latency through a vhost-user-blk export during these jobs
// and a mirror, minivmm against qemu-storage-daemon (joblat.go).
func Jobs(e *harness.Env, s *report.Section) error {
	size, data := chainSizes(e)
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
	secs, durable := map[key][]float64{}, map[key][]float64{}
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
					// QEMU's stream does not flush the top before
					// BLOCK_JOB_COMPLETED (its fdatasync comes at close);
					// minivmm's does, before the header names the new
					// backing file. Once the VMM has exited after quit,
					// both have made everything durable.
					v.do("quit", nil)
					v.c.WaitClosed(time.Minute)
					durable[key{sd.name, kind}] = append(durable[key{sd.name, kind}], time.Since(start).Seconds())
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
		"%d rounds, the VMMs alternating. Throughput is mid's data over that time; the ratio is taken within each round.", size>>20, data>>20, e.Reps)
	s.Commands = []string{reportCmd(e, "jobs")}
	t := s.Table("", "job", "until", "minivmm", "QEMU", "minivmm MiB/s", "QEMU MiB/s", "minivmm / QEMU throughput")
	for _, kind := range kinds {
		for _, until := range []struct {
			name string
			secs map[key][]float64
		}{{"BLOCK_JOB_COMPLETED", secs}, {"durable (exited after quit)", durable}} {
			m, q := until.secs[key{"minivmm", kind}], until.secs[key{"QEMU", kind}]
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
			}
			if until.name == "BLOCK_JOB_COMPLETED" {
				if e.QemuSys != "" {
					point(s, "jobs-throughput", kind, "QEMU", rate(q))
				}
				point(s, "jobs-throughput", kind, "minivmm", rate(m))
			}
			t.Add(kind, until.name, dur(m), qd, num(rate(m)), qr, r)
		}
	}
	s.Note("QEMU 7.2's stream signals BLOCK_JOB_COMPLETED before the top is flushed (strace: its fdatasync of the top " +
		"comes when the image is closed, and a power loss right after the event can lose copied data under a header that " +
		"no longer names the backing file); minivmm's stream flushes first, and both VMMs' commits flush the base before " +
		"the event. The second row of each job is timed to the VMM's exit after `quit`, by which both have flushed.")
	return writerLatency(e, s, ref, size)
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
