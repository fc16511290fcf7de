package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// convertOffloadSize is BenchmarkConvertOffloadQcow2's source; BENCH_CONVERT_MIB
// changes it (the figure is for 1024).
func convertOffloadSize() int64 {
	if v, err := strconv.Atoi(os.Getenv("BENCH_CONVERT_MIB")); err == nil && v > 0 {
		return int64(v) << 20
	}
	return 256 << 20
}

// BenchmarkConvertOffloadQcow2 converts a raw image full of data into a
// new qcow2, whole processes, three per iteration in turn: `minivmm img
// convert -C` (copy_file_range into the clusters the qcow2 driver
// allocates), the same without -C (reads and writes) and `qemu-img
// convert -C`. It reports -C's time over the plain convert's as
// x-plain (below 1: offloading is faster) and over qemu-img's as x-qemu.
func BenchmarkConvertOffloadQcow2(b *testing.B) {
	needQemuImg(b)
	bin := minivmmBinary(b)
	dir := b.TempDir()
	src := filepath.Join(dir, "src.raw")
	size := convertOffloadSize()
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(chunk)) {
		for i := range chunk {
			chunk[i] = byte(off>>20) + byte(i*7+1)
		}
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
	out := filepath.Join(dir, "out.qcow2")
	var offload, plain, qemu time.Duration
	for b.Loop() {
		os.Remove(out)
		offload += timeTool(b, bin, "img", "convert", "-C", "-f", "raw", "-O", "qcow2", src, out)
		os.Remove(out)
		plain += timeTool(b, bin, "img", "convert", "-f", "raw", "-O", "qcow2", src, out)
		os.Remove(out)
		qemu += timeTool(b, "qemu-img", "convert", "-C", "-f", "raw", "-O", "qcow2", src, out)
	}
	b.ReportMetric(offload.Seconds()/plain.Seconds(), "x-plain")
	b.ReportMetric(offload.Seconds()/qemu.Seconds(), "x-qemu")
	b.ReportMetric(float64(size)*float64(b.N)/offload.Seconds()/1e6, "offload-MB/s")
}
