package nullco_test

import (
	"testing"
	"time"

	"minivmm/block"
	_ "minivmm/block/nullco"
	"minivmm/qemuopen"
)

// TestLatency: latency-ns is honoured (a request takes at least that
// long; it used to be accepted and ignored), and a negative one is
// refused with QEMU's message.
func TestLatency(t *testing.T) {
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	defer g.Close()
	if _, err := g.Add(block.Options{"driver": "null-co", "latency-ns": int64(-1)}); err == nil || err.Error() != "latency-ns is invalid" {
		t.Fatalf("negative latency: %v", err)
	}
	const latency = 20 * time.Millisecond
	n, err := g.Add(block.Options{"driver": "null-co", "latency-ns": int64(latency)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := n.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < latency {
		t.Fatalf("a read took %v, less than latency-ns %v", d, latency)
	}
}
