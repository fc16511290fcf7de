package qcow2

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"minivmm/block"
)

// BenchmarkRead4K reads a fully allocated 64 MiB qcow2 image (64 KiB
// clusters) in 4 KiB sequential requests through the block layer, against
// the raw image of the same data (raw over file): compare the two as a
// ratio (benchstat, or ns/op side by side). Sub-benchmarks "parallel"
// read from GOMAXPROCS goroutines at once.
func BenchmarkRead4K(b *testing.B) {
	raw, img := benchImages(b)
	for _, tc := range []struct {
		name string
		opts block.Options
	}{
		{"raw", block.Options{"driver": "raw", "read-only": true, "file": block.Options{"driver": "file", "filename": raw}}},
		{"qcow2", qcow2Options(img)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			g := fixture(b)
			n, err := g.Add(tc.opts)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 4096)
			off := int64(0)
			b.SetBytes(4096)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := n.ReadAt(buf, off); err != nil {
					b.Fatal(err)
				}
				if off += 4096; off == benchImageSize {
					off = 0
				}
			}
		})
		b.Run(tc.name+"/parallel", func(b *testing.B) {
			g := fixture(b)
			n, err := g.Add(tc.opts)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(4096)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 4096)
				off := int64(rand.IntN(benchImageSize/4096)) * 4096
				for pb.Next() {
					if _, err := n.ReadAt(buf, off); err != nil {
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

const benchImageSize = 64 << 20

// benchImages makes a 64 MiB raw file of random data and a fully
// allocated qcow2 (64 KiB clusters) converted from it by qemu-img.
func benchImages(b *testing.B) (raw, img string) {
	needQemu(b)
	dir := b.TempDir()
	data := make([]byte, benchImageSize)
	r := rand.New(rand.NewPCG(1, 1))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	raw = filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(raw, data, 0o600); err != nil {
		b.Fatal(err)
	}
	img = filepath.Join(dir, "disk.qcow2")
	run(b, dir, "qemu-img", "convert", "-O", "qcow2", raw, img)
	return raw, img
}
