package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/qemuopen"
)

const (
	imgBenchSize  = 256 << 20 // BenchmarkImgBenchVsQemu's images
	imgBenchCount = 200000    // requests per img bench run: ~0.2-0.6 s for minivmm here
	allocSize     = 64 << 20  // BenchmarkFirstWriteAllocation's images
	allocIO       = 64 << 10  // one write, one qcow2 cluster
	compSize      = 64 << 20  // BenchmarkCompressedRead's images
	compIO        = 64 << 10
)

// BenchmarkImgBenchVsQemu runs `minivmm img bench` and `qemu-img bench`
// (both whole processes, built/installed binaries) with the same arguments
// on the same 256 MiB image, one pair per iteration, and reports each
// one's requests/s from its "Run completed in X seconds." line and the
// ratio minivmm/qemu as x-qemu (above 1: minivmm is faster). Images: raw
// filled with data, and qcow2 converted from it (every cluster allocated);
// 4 KiB sequential requests at depth 1 and 64; writes use --pattern=0xa5 so
// the images keep non-zero data. Reads run before writes.
func BenchmarkImgBenchVsQemu(b *testing.B) {
	needQemuImg(b)
	bin := minivmmBinary(b)
	dir := b.TempDir()
	raw := filepath.Join(dir, "img.raw")
	runTool(b, "qemu-img", "create", "-q", "-f", "raw", raw, strconv.Itoa(imgBenchSize))
	data := make([]byte, imgBenchSize)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	if err := os.WriteFile(raw, data, 0o600); err != nil {
		b.Fatal(err)
	}
	data = nil
	qcow := filepath.Join(dir, "img.qcow2")
	runTool(b, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow)
	images := map[string]string{"raw": raw, "qcow2": qcow}

	for _, write := range []bool{false, true} {
		op := map[bool]string{false: "read", true: "write"}[write]
		for _, format := range []string{"raw", "qcow2"} {
			for _, depth := range []int{1, 64} {
				b.Run(fmt.Sprintf("%s/%s/depth=%d", op, format, depth), func(b *testing.B) {
					args := []string{"-c", strconv.Itoa(imgBenchCount), "-d", strconv.Itoa(depth), "-f", format}
					if write {
						args = append(args, "-w", "--pattern=165")
					}
					args = append(args, images[format])
					var mine, qemu float64
					for b.Loop() {
						s, err := benchSeconds(runTool(b, bin, append([]string{"img", "bench"}, args...)...))
						if err != nil {
							b.Fatal(err)
						}
						mine += s
						s, err = benchSeconds(runTool(b, "qemu-img", append([]string{"bench"}, args...)...))
						if err != nil {
							b.Fatal(err)
						}
						qemu += s
					}
					reqs := float64(imgBenchCount) * float64(b.N)
					b.ReportMetric(reqs/mine, "minivmm-req/s")
					b.ReportMetric(reqs/qemu, "qemu-req/s")
					b.ReportMetric(qemu/mine, "x-qemu")
				})
			}
		}
	}
}

// openRW opens o in a fresh graph, attached for writing; close releases
// both.
func openRW(b *testing.B, o block.Options) (n *block.Node, close func()) {
	b.Helper()
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	close = func() { g.Close(); reg.CloseAll() }
	n, err := g.Add(o)
	if err != nil {
		close()
		b.Fatal(err)
	}
	if _, err := g.Attach("", n, block.Perm{Write: true}); err != nil {
		close()
		b.Fatal(err)
	}
	return n, close
}

func fileNode(driver, path string, readOnly bool) block.Options {
	return block.Options{"driver": driver, "read-only": readOnly,
		"file": block.Options{"driver": "file", "filename": path}}
}

// BenchmarkFirstWriteAllocation writes 64 MiB in sequential 64 KiB
// requests through the block layer to a fresh, empty qcow2 (64 KiB
// clusters: every write allocates a cluster, and L2 tables and refcount
// blocks as it goes) and, as the baseline in the same iteration, to a
// fresh sparse raw file of the same size (raw over file). It times the
// writes and a final Flush of each (images are created and opened outside
// the timing) and reports both MB/s and qcow2/raw as x-raw (1 would mean
// allocation costs nothing over raw); qcow2-flush-ms and raw-flush-ms are
// the part of each time spent in the final Flush (fsync to the disk).
func BenchmarkFirstWriteAllocation(b *testing.B) {
	needQemuImg(b)
	dir := b.TempDir()
	buf := make([]byte, allocIO)
	for i := range buf {
		buf[i] = byte(i*13 + 1)
	}
	var qcowFlush, rawFlush time.Duration
	timeWrites := func(o block.Options, flushT *time.Duration) time.Duration {
		n, close := openRW(b, o)
		defer close()
		start := time.Now()
		for off := int64(0); off < allocSize; off += allocIO {
			if _, err := n.WriteAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
		flushStart := time.Now()
		if err := n.Flush(); err != nil {
			b.Fatal(err)
		}
		*flushT += time.Since(flushStart)
		return time.Since(start)
	}
	var qcowT, rawT time.Duration
	i := 0
	for b.Loop() {
		qcow := filepath.Join(dir, "fresh.qcow2")
		raw := filepath.Join(dir, "fresh.raw")
		os.Remove(qcow)
		os.Remove(raw)
		runTool(b, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", qcow, strconv.Itoa(allocSize))
		if err := os.WriteFile(raw, nil, 0o600); err != nil {
			b.Fatal(err)
		}
		if err := os.Truncate(raw, allocSize); err != nil {
			b.Fatal(err)
		}
		// Alternate which goes first, so that neither always pays for
		// the other's page-cache writeback.
		if i%2 == 0 {
			qcowT += timeWrites(fileNode("qcow2", qcow, false), &qcowFlush)
			rawT += timeWrites(fileNode("raw", raw, false), &rawFlush)
		} else {
			rawT += timeWrites(fileNode("raw", raw, false), &rawFlush)
			qcowT += timeWrites(fileNode("qcow2", qcow, false), &qcowFlush)
		}
		i++
	}
	mb := float64(allocSize) / 1e6 * float64(b.N)
	b.ReportMetric(mb/qcowT.Seconds(), "qcow2-MB/s")
	b.ReportMetric(mb/rawT.Seconds(), "raw-MB/s")
	b.ReportMetric(rawT.Seconds()/qcowT.Seconds(), "x-raw")
	b.ReportMetric(float64(qcowFlush.Milliseconds())/float64(b.N), "qcow2-flush-ms")
	b.ReportMetric(float64(rawFlush.Milliseconds())/float64(b.N), "raw-flush-ms")
}

// BenchmarkCompressedRead reads a compressed qcow2 of 64 MiB of
// compressible text (made by `qemu-img convert -c`, zlib and zstd) from
// start to end in 64 KiB requests through the block layer, in process
// (open included), and as the baseline times `qemu-img convert -O raw` of
// the same image to a temp file (a whole process: start-up, decompression
// and the page-cache write of the output). It reports MB/s of virtual
// size for both and minivmm/qemu as x-qemu; the baseline carries costs
// minivmm's side does not (exec, output write), so read the ratio as an
// upper bound.
func BenchmarkCompressedRead(b *testing.B) {
	needQemuImg(b)
	dir := b.TempDir()
	src := filepath.Join(dir, "src.raw")
	writeCompressible(b, src, compSize)
	for _, ctype := range []string{"zlib", "zstd"} {
		img := filepath.Join(dir, ctype+".qcow2")
		runTool(b, "qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "compression_type="+ctype, src, img)
		b.Run(ctype, func(b *testing.B) {
			out := filepath.Join(b.TempDir(), "out.raw")
			buf := make([]byte, compIO)
			var mine, qemu time.Duration
			for b.Loop() {
				reg := qemuopen.New(qemuopen.Config{})
				g := block.NewGraph(reg)
				start := time.Now()
				node, err := g.Add(fileNode("qcow2", img, true))
				if err != nil {
					b.Fatal(err)
				}
				for off := int64(0); off < compSize; off += compIO {
					if _, err := node.ReadAt(buf, off); err != nil {
						b.Fatal(err)
					}
				}
				mine += time.Since(start)
				g.Close()
				reg.CloseAll()

				qemu += timeTool(b, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", img, out)
				os.Remove(out)
			}
			mb := float64(compSize) / 1e6 * float64(b.N)
			b.ReportMetric(mb/mine.Seconds(), "minivmm-MB/s")
			b.ReportMetric(mb/qemu.Seconds(), "qemu-MB/s")
			b.ReportMetric(qemu.Seconds()/mine.Seconds(), "x-qemu")
		})
	}
}
