package qcow2

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"minivmm/block/faultdisk"
	"minivmm/internal/fdtest"
)

// plKinds is the crash matrix of the power-loss harness: every kind of
// image the write path treats differently.
var plKinds = []plKind{
	{name: "v3 4k", opts: "cluster_size=4096", size: 1 << 20, ops: 80},
	{name: "v2 4k", opts: "cluster_size=4096,compat=0.10", size: 1 << 20, ops: 80},
	{name: "v3 512", opts: "cluster_size=512", size: 512 << 10, ops: 80},
	{name: "refcount_bits=1", opts: "cluster_size=4096,refcount_bits=1", size: 1 << 20, ops: 80},
	{name: "refcount_bits=64", opts: "cluster_size=4096,refcount_bits=64", size: 1 << 20, ops: 80},
	{name: "512 refcount_bits=2", opts: "cluster_size=512,refcount_bits=2", size: 512 << 10, ops: 80},
	{name: "lazy refcounts", opts: "cluster_size=4096,lazy_refcounts=on", size: 1 << 20, ops: 80},
	{name: "lazy refcounts 512", opts: "cluster_size=512,lazy_refcounts=on", size: 512 << 10, ops: 80},
	{name: "extended L2", opts: "cluster_size=16384,extended_l2=on", size: 1 << 20, ops: 80},
	{name: "extended L2 lazy refcounts", opts: "cluster_size=16384,extended_l2=on,lazy_refcounts=on", size: 1 << 20, ops: 80},
	{name: "internal snapshot", opts: "cluster_size=4096", size: 1 << 20, ops: 80, snapshot: true},
	{name: "internal snapshot v2", opts: "cluster_size=4096,compat=0.10", size: 1 << 20, ops: 80, snapshot: true, noResize: true},
	{name: "extended L2 internal snapshot", opts: "cluster_size=16384,extended_l2=on", size: 1 << 20, ops: 80, snapshot: true},
	{name: "lazy refcounts internal snapshot", opts: "cluster_size=4096,lazy_refcounts=on", size: 1 << 20, ops: 80, snapshot: true},
	{name: "compressed", opts: "cluster_size=4096", size: 1 << 20, ops: 80, compress: true},
	{name: "compressed zstd", opts: "cluster_size=4096,compression_type=zstd", size: 1 << 20, ops: 80, compress: true},
	{name: "extended L2 compressed", opts: "cluster_size=16384,extended_l2=on", size: 1 << 20, ops: 80, compress: true},
	{name: "backing raw", opts: "cluster_size=4096", size: 1 << 20, ops: 80, backing: "raw"},
	{name: "backing v2", opts: "cluster_size=4096,compat=0.10", size: 1 << 20, ops: 80, backing: "raw"},
	{name: "backing qcow2 extended L2", opts: "cluster_size=16384,extended_l2=on", size: 1 << 20, ops: 80, backing: "qcow2"},
}

// plBig is the long run: POWERLOSS=big (three times the operations, more
// random states per crash point, every fifth state through QEMU, four
// seeds). POWERLOSS_SEEDS=n runs n seeds, POWERLOSS_SEED=s starts at s.
func plBig() bool { return os.Getenv("POWERLOSS") == "big" }

// TestPowerLoss runs random guest writes, zero writes, discards and
// flushes on every kind of image through a faultdisk, then judges crash
// states at every flush of the run (see powerloss_judge_test.go).
func TestPowerLoss(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	var stats plStats
	start := time.Now()
	randomPerPoint, qemuEvery, seeds, opsScale := 6, int64(20), 1, 1.0
	switch {
	case plBig():
		randomPerPoint, qemuEvery, seeds, opsScale = 40, 5, 4, 3
	case testing.Short():
		randomPerPoint, opsScale = 3, 0.4
	}
	if v, err := strconv.Atoi(os.Getenv("POWERLOSS_SEEDS")); err == nil && v > 0 {
		seeds = v
	}
	first, _ := strconv.Atoi(os.Getenv("POWERLOSS_SEED"))
	first = max(first, 1)
	for _, k := range plKinds {
		t.Run(k.name, func(t *testing.T) {
			before, start := stats.states.Load(), time.Now()
			defer func() {
				t.Logf("%d states in %v", stats.states.Load()-before, time.Since(start).Round(time.Millisecond))
			}()
			k.ops = int(float64(k.ops) * opsScale)
			for seed := first; seed < first+seeds; seed++ {
				pr := recordRun(t, k, uint64(seed), nil)
				if err := pr.judgeRun(randomPerPoint, qemuEvery, &stats); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
			}
		})
	}
	el := time.Since(start)
	t.Logf("%d crash states at %d crash points judged in %v (%.0f/s), %d left dirty and repaired, %d also read and checked by QEMU",
		stats.states.Load(), stats.points.Load(), el.Round(time.Millisecond), float64(stats.states.Load())/el.Seconds(),
		stats.dirty.Load(), stats.qemuChecked.Load())
}

// TestPowerLossFindsDroppedFlush shows that the harness cannot pass
// silently: with one of the flushes of a run made a no-op (the disk
// reports it done and makes nothing durable, as a write-back that lost an
// fdatasync would), it must find what that breaks — the refcount
// ordering (check finds corruption) or a flushed write lost — for most
// choices of the flush dropped. A flush whose loss breaks nothing (the
// last of a close, one after which only references are dropped) is
// allowed to go unnoticed.
func TestPowerLossFindsDroppedFlush(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	k := plKind{name: "v3 4k", opts: "cluster_size=4096", size: 1 << 20, ops: 80}
	base := recordRun(t, k, 1, nil)
	flushes := 0
	for _, c := range base.journal.Ops {
		if c.Kind == faultdisk.Flush {
			flushes++
		}
	}
	if !plBig() {
		flushes = min(flushes, 10)
	}
	var found, corrupt, lost int
	for n := range flushes {
		var stats plStats
		pr := recordRun(t, k, 1, func(d *faultdisk.Disk) {
			d.AddRule(&faultdisk.Rule{Kinds: faultdisk.Flush, Drop: true, After: int64(n), Times: 1})
		})
		err := pr.judgeRun(12, 0, &stats)
		if err == nil {
			t.Logf("flush %d dropped: nothing found in %d crash states", n, stats.states.Load())
			continue
		}
		found++
		msg := err.Error()
		switch {
		case strings.Contains(msg, "check finds"):
			corrupt++
		case strings.Contains(msg, "neither what the last completed flush"):
			lost++
		}
		first, _, _ := strings.Cut(msg, "\n")
		t.Logf("flush %d dropped: found after %d crash states: %s", n, stats.states.Load(), first)
	}
	t.Logf("%d of %d dropped flushes found (%d as corruption, %d as lost data)", found, flushes, corrupt, lost)
	if found*2 < flushes || corrupt == 0 || lost == 0 {
		t.Errorf("the harness found %d of %d dropped flushes (%d as corruption, %d as lost data)", found, flushes, corrupt, lost)
	}
}
