package imgtool

import "testing"

// TestImgConvertSparseRateInterop: convert -S and -r (and -C's
// refusals), by both tools: output, status and the allocation of what
// they write.
func TestImgConvertSparseRateInterop(t *testing.T) {
	setup := []diffStep{
		img("create", "-f", "qcow2", "c.qcow2", "4M"),
		qio("-c", "write -P 1 0 64k", "-c", "write -P 0 64k 64k", "-c", "write -P 2 130k 1k", "-c", "write -P 3 200k 7k",
			"-c", "write -z 1M 1M", "-c", "write -P 4 3M 4k", "-c", "write -P 0 3076k 12k", "-c", "write -P 5 3088k 512", "c.qcow2"),
	}
	var cases []diffCase
	for _, sp := range []string{"0", "512", "1536", "4k", "8k", "64k", "16M"} {
		for _, f := range []string{"raw", "qcow2"} {
			cases = append(cases, diffCase{name: "S" + sp + "-" + f, setup: setup, images: []string{"o." + f},
				steps: []diffStep{img("convert", "-S", sp, "-O", f, "c.qcow2", "o."+f)}})
		}
	}
	// Compressed: with -S 0 clusters of zeroes go compressed too (qemu's
	// iotest 122), with a default -S as zero clusters.
	for _, sp := range []string{"0", "4k"} {
		cases = append(cases, diffCase{name: "c-S" + sp, setup: setup, images: []string{"o.qcow2"},
			steps: []diffStep{img("convert", "-c", "-S", sp, "-O", "qcow2", "c.qcow2", "o.qcow2")}})
	}
	cases = append(cases,
		diffCase{name: "rate", setup: setup, images: []string{"o.raw"}, steps: []diffStep{
			img("convert", "-r", "64M", "-O", "raw", "c.qcow2", "o.raw"),
			img("convert", "-r", "0", "-O", "raw", "c.qcow2", "o.raw")}},
		diffCase{name: "errors", setup: setup, steps: []diffStep{
			img("convert", "-S", "1000", "-O", "raw", "c.qcow2", "o.raw"),
			img("convert", "-S", "-1", "-O", "raw", "c.qcow2", "o.raw"),
			img("convert", "-S", "17M", "-O", "raw", "c.qcow2", "o.raw"),
			img("convert", "-r", "x", "-O", "raw", "c.qcow2", "o.raw"),
			img("convert", "-r", "-5", "-O", "raw", "c.qcow2", "o.raw"),
			img("convert", "-C", "-c", "-O", "qcow2", "c.qcow2", "o.qcow2"),
		}},
	)
	runDiffCases(t, cases)
}
