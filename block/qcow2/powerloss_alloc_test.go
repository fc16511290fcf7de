package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/internal/fdtest"
)

// allocRangeOp is a guest operation of a power-loss run by range
// allocation: half the time a write whose data the allocation's fill
// puts into the data file (CopyRangeTo's path with writes for
// copy_file_range, which the fault driver has no fd for), else a
// preallocation (any mode) of the range, which changes nothing the
// guest reads. It returns the data written (nil: none).
func allocRangeOp(n *block.Node, qimg *image, r *rand.Rand, i int, off, l int64) (string, []byte, error) {
	if r.IntN(2) == 0 {
		mode := block.Prealloc(r.IntN(3))
		name := fmt.Sprintf("preallocate(%d) %d+%d", mode, off, l)
		before, after := make([]byte, l), make([]byte, l)
		if _, err := n.ReadAt(before, off); err != nil {
			return name, nil, err
		}
		if err := qimg.Preallocate(off, l, mode); err != nil {
			return name, nil, err
		}
		if _, err := n.ReadAt(after, off); err != nil {
			return name, nil, err
		}
		if !bytes.Equal(before, after) {
			return name, nil, errors.New("the range reads differently after preallocation")
		}
		return name, nil, nil
	}
	p := make([]byte, l)
	for j := range p {
		p[j] = patternByte(i, off+int64(j))
	}
	err := qimg.fillRange(off, l, func(s hostSpan) error {
		_, err := qimg.dataFile().WriteAt(p[s.pos:s.pos+s.n], s.host)
		return err
	})
	return fmt.Sprintf("copy-range %d+%d", off, l), p, err
}

// TestPowerLossAllocRange runs the power-loss harness with range
// allocations (copy offloading's and preallocation's path) among the
// writes, on the kinds of image they treat differently, and judges the
// crash states at every flush.
func TestPowerLossAllocRange(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	var stats plStats
	randomPerPoint := 6
	if testing.Short() {
		randomPerPoint = 3
	}
	for _, k := range []plKind{
		{name: "v3 4k", opts: "cluster_size=4096", size: 1 << 20, ops: 80},
		{name: "v2 512", opts: "cluster_size=512,compat=0.10", size: 512 << 10, ops: 80},
		{name: "lazy refcounts", opts: "cluster_size=4096,lazy_refcounts=on", size: 1 << 20, ops: 80},
		{name: "extended L2 backing", opts: "cluster_size=16384,extended_l2=on", size: 1 << 20, ops: 80, backing: "qcow2"},
		{name: "backing raw", opts: "cluster_size=4096", size: 1 << 20, ops: 80, backing: "raw"},
		{name: "internal snapshot", opts: "cluster_size=4096", size: 1 << 20, ops: 80, snapshot: true},
		{name: "compressed", opts: "cluster_size=4096", size: 1 << 20, ops: 80, compress: true},
	} {
		k.allocRange = true
		t.Run(k.name, func(t *testing.T) {
			start := time.Now()
			pr := recordRun(t, k, 1, nil)
			if err := pr.judgeRun(randomPerPoint, 20, &stats); err != nil {
				t.Fatal(err)
			}
			t.Logf("judged in %v", time.Since(start).Round(time.Millisecond))
		})
	}
	t.Logf("%d crash states judged", stats.states.Load())
}
