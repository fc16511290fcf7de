package qcow2

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"minivmm/block"
)

// BenchmarkWrite4K writes 4 KiB in place into a fully allocated 64 MiB
// qcow2 image (64 KiB clusters), against a raw image of the same size:
// compare the two as a ratio. "parallel" writes from GOMAXPROCS
// goroutines at once.
func BenchmarkWrite4K(b *testing.B) {
	raw, img := benchImages(b)
	for _, tc := range []struct {
		name string
		opts block.Options
	}{
		{"raw", block.Options{"driver": "raw", "file": block.Options{"driver": "file", "filename": raw}}},
		{"qcow2", block.Options{"driver": "qcow2", "file": block.Options{"driver": "file", "filename": img}}},
	} {
		open := func(b *testing.B) *block.Node {
			g := fixture(b)
			n, err := g.Add(tc.opts)
			if err != nil {
				b.Fatal(err)
			}
			be, err := g.Attach("", n, block.Perm{Write: true})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { g.Detach(be) })
			return n
		}
		b.Run(tc.name, func(b *testing.B) {
			n := open(b)
			buf := make([]byte, 4096)
			off := int64(0)
			b.SetBytes(4096)
			for b.Loop() {
				if _, err := n.WriteAt(buf, off); err != nil {
					b.Fatal(err)
				}
				if off += 4096; off == benchImageSize {
					off = 0
				}
			}
		})
		b.Run(tc.name+"/parallel", func(b *testing.B) {
			n := open(b)
			b.SetBytes(4096)
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 4096)
				off := int64(rand.IntN(benchImageSize/4096)) * 4096
				for pb.Next() {
					if _, err := n.WriteAt(buf, off); err != nil {
						b.Error(err)
						return
					}
					if off += 4096; off == benchImageSize {
						off = 0
					}
				}
			})
		})
	}
}

// BenchmarkFirstWrite is bench's BenchmarkFirstWriteAllocation for
// images with and without lazy refcounts: 64 MiB in sequential 64 KiB
// writes to a fresh qcow2 (64 KiB clusters: each write allocates), then
// a Flush, against the same on a fresh sparse raw file; x-raw is
// qcow2's rate over raw's.
func BenchmarkFirstWrite(b *testing.B) {
	needQemu(b)
	const size, io = 64 << 20, 64 << 10
	buf := make([]byte, io)
	for i := range buf {
		buf[i] = byte(i*13 + 1)
	}
	for _, lazy := range []string{"off", "on"} {
		b.Run("lazy_refcounts="+lazy, func(b *testing.B) {
			dir := b.TempDir()
			timeWrites := func(o block.Options) time.Duration {
				g := fixture(b)
				n, err := g.Add(o)
				if err != nil {
					b.Fatal(err)
				}
				be, err := g.Attach("", n, block.Perm{Write: true})
				if err != nil {
					b.Fatal(err)
				}
				defer g.Detach(be)
				start := time.Now()
				for off := int64(0); off < size; off += io {
					if _, err := n.WriteAt(buf, off); err != nil {
						b.Fatal(err)
					}
				}
				if err := n.Flush(); err != nil {
					b.Fatal(err)
				}
				return time.Since(start)
			}
			var qcowT, rawT time.Duration
			for i := 0; b.Loop(); i++ {
				qcow, raw := filepath.Join(dir, "fresh.qcow2"), filepath.Join(dir, "fresh.raw")
				os.Remove(qcow)
				os.Remove(raw)
				run(b, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536,lazy_refcounts="+lazy, qcow, itoa(size))
				run(b, dir, "qemu-img", "create", "-q", "-f", "raw", raw, itoa(size))
				q := block.Options{"driver": "qcow2", "file": block.Options{"driver": "file", "filename": qcow}}
				r := block.Options{"driver": "raw", "file": block.Options{"driver": "file", "filename": raw}}
				if i%2 == 0 { // neither always pays for the other's writeback
					qcowT += timeWrites(q)
					rawT += timeWrites(r)
				} else {
					rawT += timeWrites(r)
					qcowT += timeWrites(q)
				}
			}
			mb := float64(size) / 1e6 * float64(b.N)
			b.ReportMetric(mb/qcowT.Seconds(), "qcow2-MB/s")
			b.ReportMetric(mb/rawT.Seconds(), "raw-MB/s")
			b.ReportMetric(rawT.Seconds()/qcowT.Seconds(), "x-raw")
		})
	}
}
