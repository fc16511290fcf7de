package cases

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/bench/internal/vuwriter"
	"minivmm/block/qcow2"
	"minivmm/internal/qmptest"
)

// The writer's latency during a job, through the device path on both
// sides: minivmm and qemu-storage-daemon each export the chain's top as
// a vhost-user-blk device and run the same QMP job on it, while one Go
// client (the virtio-blk driver over the vhost-user front end) writes
// 4 KiB at depth 1 to the export, from the job's start to its end.

// latModes are the jobs the writer runs against: none, intermediate
// commit of mid into base, stream of mid into top, mirror (sync=full)
// of top into a new image until READY.
var latModes = []string{"no job", "commit", "stream", "mirror"}

// latNoJobWrites is how many writes the no-job rounds time.
const latNoJobWrites = 4000

type latSide struct{ name, bin string }

func latSides(e *harness.Env) []latSide {
	ss := []latSide{{"minivmm", e.Minivmm}}
	if p, err := exec.LookPath("qemu-storage-daemon"); err == nil {
		ss = append(ss, latSide{"QSD", p})
	}
	return ss
}

// startDaemon starts minivmm (`-machine none`) or qemu-storage-daemon
// with a QMP socket and connects to it.
func startDaemon(t *harness.T, sd latSide) *vmm {
	if sd.name == "minivmm" {
		return startVMM(t, sd.bin)
	}
	dir, err := os.MkdirTemp("", "qsd")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "qmp.sock")
	p := qmptest.StartArgs(t, sd.bin, nil, "--chardev", "socket,id=m,path="+sock+",server=on,wait=off", "--monitor", "chardev=m")
	harness.Track(p.Pid)
	t.Cleanup(func() { harness.Untrack(p.Pid) })
	p.Sock = sock
	c := qmptest.Dial(t, sock)
	c.Negotiate()
	return &vmm{t: t, p: p, c: c}
}

// latRun opens the chain in dir on one daemon, exports top, starts the
// job mode names and times 4 KiB writes at depth 1 through the export
// until the job ends (commit, stream: BLOCK_JOB_COMPLETED; mirror:
// BLOCK_JOB_READY).
func latRun(t *harness.T, sd latSide, dir, mode string) []float64 {
	v := startDaemon(t, sd)
	v.c.SetTimeout(10 * time.Minute)
	nodes := []struct{ name, backing string }{{"base", ""}, {"mid", "base"}, {"top", "mid"}}
	if mode == "mirror" {
		nodes = append(nodes, struct{ name, backing string }{"tgt", ""})
	}
	for _, n := range nodes {
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
	sock := dir + "/vu.sock"
	v.do("block-export-add", map[string]any{"type": "vhost-user-blk", "id": "e", "node-name": "top",
		"addr": map[string]any{"type": "unix", "path": sock}, "writable": true})
	w, err := vuwriter.Dial(sock)
	if err != nil {
		t.Fatalf("%s: %v", sd.name, err)
	}
	defer w.Close()
	// The same offsets in every run, so that both sides allocate the
	// same clusters of top.
	rng := rand.New(rand.NewPCG(9, 9))
	blocks := w.Capacity() / 4096
	var stop atomic.Bool
	lat := make(chan []float64, 1)
	werr := make(chan error, 1)
	go func() {
		var xs []float64
		for i := 0; !stop.Load() && (mode != "no job" || i < latNoJobWrites); i++ {
			d, err := w.Write(rng.Int64N(blocks)*4096, 4096)
			if err != nil {
				werr <- err
				break
			}
			xs = append(xs, d.Seconds())
		}
		lat <- xs
	}()
	switch mode {
	case "commit":
		v.do("block-commit", map[string]any{"job-id": "j", "device": "top", "top-node": "mid", "base-node": "base"})
	case "stream":
		v.do("block-stream", map[string]any{"job-id": "j", "device": "top", "base-node": "base"})
	case "mirror":
		v.do("blockdev-mirror", map[string]any{"job-id": "j", "device": "top", "target": "tgt", "sync": "full"})
	}
	switch mode {
	case "commit", "stream":
		if ev := v.c.Event("BLOCK_JOB_COMPLETED", 10*time.Minute); ev["data"].(map[string]any)["error"] != nil {
			t.Fatalf("%s on %s: %v", mode, sd.name, ev)
		}
	case "mirror":
		v.c.Event("BLOCK_JOB_READY", 10*time.Minute)
	}
	if mode != "no job" {
		stop.Store(true)
	}
	xs := <-lat
	select {
	case err := <-werr:
		t.Fatalf("%s: write during %s: %v", sd.name, mode, err)
	default:
	}
	if len(xs) == 0 {
		t.Fatalf("%s: no write during %s", sd.name, mode)
	}
	return xs
}

// writerLatency runs latRun for each mode and side, rounds interleaved
// (the side going first alternating), and tabulates each round's median
// and 99th percentile.
func writerLatency(e *harness.Env, s *report.Section, ref string, size int64) error {
	sides := latSides(e)
	type key struct{ side, mode string }
	p50, p99, count := map[key][]float64{}, map[key][]float64{}, map[key][]float64{}
	err := harness.WithT("jobs-latency", func(t *harness.T) {
		for rep := range e.Reps {
			for _, mode := range latModes {
				for k := range sides {
					sd := sides[(k+rep)%len(sides)]
					dir := e.Path(fmt.Sprintf("jobs-lat-%d-%d", rep, k))
					if err := os.MkdirAll(dir, 0o700); err != nil {
						t.Fatalf("%v", err)
					}
					for _, img := range []string{"base", "mid", "top"} {
						if _, err := harness.Exec("cp", ref+"/"+img+".qcow2", dir); err != nil {
							t.Fatalf("%v", err)
						}
					}
					if mode == "mirror" {
						if err := createQcow2(dir+"/tgt.qcow2", qcow2.CreateOptions{Size: uint64(size)}); err != nil {
							t.Fatalf("%v", err)
						}
					}
					xs := latRun(t, sd, dir, mode)
					os.RemoveAll(dir)
					slices.Sort(xs)
					k := key{sd.name, mode}
					p50[k] = append(p50[k], xs[len(xs)/2])
					p99[k] = append(p99[k], xs[len(xs)*99/100])
					count[k] = append(count[k], float64(len(xs)))
				}
			}
		}
	})
	if err != nil {
		return err
	}
	qsd := len(sides) > 1
	t := s.Table("4 KiB writes at depth 1 to the top through a vhost-user-blk export, while the job runs",
		"job", "minivmm median", "QSD median", "minivmm p99", "QSD p99", "QSD / minivmm (median)", "QSD / minivmm (p99)", "minivmm median / no job")
	for _, mode := range latModes {
		m50, m99 := p50[key{"minivmm", mode}], p99[key{"minivmm", mode}]
		q50, q99, r50, r99 := harness.NotInstalled("qemu-storage-daemon"), "", "–", "–"
		if qsd {
			qs50, qs99 := p50[key{"QSD", mode}], p99[key{"QSD", mode}]
			q50, q99 = dur(qs50), dur(qs99)
			r50, r99 = ratio(ratiosOf(qs50, m50)), ratio(ratiosOf(qs99, m99))
			point(s, "jobs-latency-p99", mode, "QSD", qs99)
		}
		point(s, "jobs-latency-p99", mode, "minivmm", m99)
		t.Add(mode, dur(m50), q50, dur(m99), q99, r50, r99, ratio(ratiosOf(m50, p50[key{"minivmm", "no job"}])))
	}
	s.Note("Writer latency: minivmm (`-machine none`) and qemu-storage-daemon each open a fresh copy of the chain over QMP, "+
		"export top (`block-export-add` type vhost-user-blk), and one Go client (vm/blkdriver over vm/vhostuser's front end, "+
		"bench/internal/vuwriter) writes 4 KiB at depth 1 at the same random 4 KiB-aligned offsets on both, from the job's "+
		"start to its end (BLOCK_JOB_COMPLETED; READY for mirror; %d writes with no job); each round's median and p99, "+
		"%d rounds, the daemons alternating.", latNoJobWrites, e.Reps)
	return nil
}
