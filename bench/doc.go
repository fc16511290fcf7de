// Package bench holds minivmm's benchmarks. The one-command report
// (bench/cmd/report) runs all of it side by side with QEMU and writes
// Markdown and SVG charts:
//
//	go run ./bench/cmd/report -o bench/results   # full, 5-10 min on 2 cores
//	go run ./bench/cmd/report -quick -o DIR      # ~1 min; CI runs it
//
// Its parts: bench/internal/cases (the cases, in process or running the
// tools), harness (environment, timing loops, tool runs, a testing.TB
// for internal/qmptest outside go test), stats (median, spread, fits),
// benchout (parsing img bench and /proc output), svg (charts) and report
// (Markdown). The go test benchmarks below remain for benchstat and
// pprof (go test -cpuprofile).
//
// Figures are read as ratios
// against a baseline measured in the same run (the machine is small and
// noisy), never as absolute times: run
//
//	go test -run=NONE -bench=. -count=10 ./bench/ | tee new.txt
//	benchstat new.txt
//
// # Against qemu-img (img_test.go)
//
// These need qemu-img (Debian qemu-utils): without it they skip, and
// under CI=true they fail. Each reports its own metrics with a ratio; read
// the ratio, not the absolute rates:
//
//   - BenchmarkImgBenchVsQemu/{read,write}/{raw,qcow2}/depth={1,64}:
//     `minivmm img bench` (the binary, built once) and `qemu-img bench`
//     with the same arguments on the same 256 MiB image, 4 KiB requests,
//     one pair per iteration; minivmm-req/s and qemu-req/s come from each
//     one's "Run completed in X seconds." line, x-qemu is minivmm/qemu
//     (above 1: minivmm is faster).
//   - BenchmarkFirstWriteAllocation: 64 KiB writes through the block layer
//     to a fresh, empty qcow2 (every write allocates a cluster) against
//     the same writes to a fresh sparse raw file, plus a final Flush;
//     qcow2-MB/s, raw-MB/s, x-raw = qcow2/raw (1: allocation is free), and
//     the time spent in each final Flush.
//   - BenchmarkCompressedRead/{zlib,zstd}: a whole read of a compressed
//     qcow2 of 64 MiB through the block layer, in process, against the
//     time of a `qemu-img convert -O raw` process of the same image;
//     minivmm-MB/s, qemu-MB/s, x-qemu = minivmm/qemu. The qemu side also
//     pays exec and the output write, so x-qemu leans in minivmm's favour.
//
// Quick single pass (about a minute):
//
//	go test -run=NONE -bench='ImgBench|FirstWrite|CompressedRead' -benchtime=1x ./bench/
//
// BenchmarkLayers/*/qcow2-file is the qcow2 in-place write path to
// profile:
//
//	go test -run=NONE -bench='Layers/write/qcow2-file/depth=1$' -cpuprofile=cpu.prof ./bench/
package bench
