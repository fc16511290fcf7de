package bench

import (
	"fmt"
	"testing"

	"minivmm/block"
	"minivmm/block/aio"
)

// BenchmarkAIO compares 4 KiB reads and writes submitted to the aio
// goroutine pool over a raw-file node with the pread/pwrite floor and
// with synchronous requests on the same node, at depth 1 and 32: the
// floor and the synchronous node run depth goroutines; the pool runs
// depth workers, with depth requests kept in flight by one submitter
// (a device queue's shape).
func BenchmarkAIO(b *testing.B) {
	for _, depth := range []int{1, 32} {
		for _, write := range []bool{false, true} {
			op := map[bool]string{false: "read", true: "write"}[write]
			b.Run(fmt.Sprintf("%s/floor/depth=%d", op, depth), func(b *testing.B) {
				runIO(b, layerTarget(b, "floor"), write, depth)
			})
			b.Run(fmt.Sprintf("%s/node-sync/depth=%d", op, depth), func(b *testing.B) {
				runIO(b, layerTarget(b, "raw-file"), write, depth)
			})
			b.Run(fmt.Sprintf("%s/pool/depth=%d", op, depth), func(b *testing.B) {
				runPool(b, layerTarget(b, "raw-file").(*block.Node), write, depth)
			})
		}
	}
}

func runPool(b *testing.B, n *block.Node, write bool, depth int) {
	b.SetBytes(ioSize)
	b.ReportAllocs()
	done := make(chan aio.Completion, depth)
	p := aio.NewPool(n, depth, done)
	defer p.Close()
	bufs := make([][][]byte, depth)
	for i := range bufs {
		bufs[i] = [][]byte{make([]byte, ioSize)}
	}
	op := aio.Read
	if write {
		op = aio.Write
	}
	submit := func(i int, slot int) {
		off := int64(i) * ioSize % imageSize
		if err := p.Submit(aio.Request{Op: op, Bufs: bufs[slot], Off: off, Tag: uint64(slot)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	next := 0
	for ; next < min(depth, b.N); next++ {
		submit(next, next)
	}
	for completed := 0; completed < b.N; completed++ {
		c := <-done
		if c.Err != nil {
			b.Fatal(c.Err)
		}
		if next < b.N {
			submit(next, int(c.Tag))
			next++
		}
	}
}
