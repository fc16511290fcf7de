package qcow2

import (
	"testing"
	"time"

	"minivmm/internal/fdtest"
)

// TestPowerLossReuse runs the power-loss harness with a workload of
// discards of whole clusters among writes: the writes reuse the clusters
// the discards freed (and the discards punch holes in the file,
// pass-discard-request with discard=unmap). At every crash point each
// sector reads as one of the values it may have, never another guest
// offset's data written into a reused cluster, and qemu-img check
// accepts the image.
func TestPowerLossReuse(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	var stats plStats
	randomPerPoint := 6
	if testing.Short() {
		randomPerPoint = 3
	}
	for _, k := range []plKind{
		{name: "v3 4k", opts: "cluster_size=4096", size: 1 << 20, ops: 100},
		{name: "v2 4k", opts: "cluster_size=4096,compat=0.10", size: 512 << 10, ops: 100},
		{name: "lazy refcounts", opts: "cluster_size=4096,lazy_refcounts=on", size: 1 << 20, ops: 100},
		{name: "internal snapshot", opts: "cluster_size=4096", size: 1 << 20, ops: 100, snapshot: true},
		{name: "compressed", opts: "cluster_size=4096", size: 1 << 20, ops: 100, compress: true},
	} {
		k.reuse = true
		t.Run(k.name, func(t *testing.T) {
			start := time.Now()
			pr := recordRun(t, k, 3, nil)
			if err := pr.judgeRun(randomPerPoint, 20, &stats); err != nil {
				t.Fatal(err)
			}
			t.Logf("judged in %v", time.Since(start).Round(time.Millisecond))
		})
	}
	t.Logf("%d crash states judged", stats.states.Load())
}
