package imgtool

import "testing"

// TestImgConvertCopyRangeInterop: convert -C, raw and qcow2 both ways
// (and -n, -W, -m, -B, a backing chain), and its refusals, by both
// tools: output, status and the images they write.
func TestImgConvertCopyRangeInterop(t *testing.T) {
	setup := []diffStep{
		img("create", "-f", "raw", "b.raw", "4M"),
		qio("-f", "raw", "-c", "write -P 9 0 4M", "b.raw"),
		img("create", "-f", "qcow2", "-b", "b.raw", "-F", "raw", "c.qcow2", "4M"),
		qio("-c", "write -P 1 0 64k", "-c", "write -P 0 64k 64k", "-c", "write -P 2 130k 1k", "-c", "write -P 3 200k 7k",
			"-c", "write -z 1M 1M", "-c", "write -P 4 3M 4k", "-c", "write -P 5 3088k 512", "c.qcow2"),
		img("create", "-f", "raw", "r.raw", "3M"),
		qio("-f", "raw", "-c", "write -P 7 0 1M", "-c", "write -P 8 2M 64k", "r.raw"),
		img("create", "-f", "raw", "n.raw", "3M"),
		qio("-f", "raw", "-c", "write -P 6 0 3M", "n.raw"),
	}
	var cases []diffCase
	for _, in := range []string{"c.qcow2", "r.raw"} {
		for _, f := range []string{"raw", "qcow2"} {
			cases = append(cases, diffCase{name: in + "-" + f, setup: setup, images: []string{"o." + f},
				steps: []diffStep{img("convert", "-C", "-O", f, in, "o."+f)}})
		}
	}
	cases = append(cases,
		diffCase{name: "W-m", setup: setup, images: []string{"o.raw"}, steps: []diffStep{
			img("convert", "-C", "-W", "-m", "3", "-O", "raw", "c.qcow2", "o.raw")}},
		diffCase{name: "concat", setup: setup, images: []string{"o.raw"}, steps: []diffStep{
			img("convert", "-C", "-O", "raw", "r.raw", "c.qcow2", "o.raw")}},
		diffCase{name: "n", setup: setup, images: []string{"n.raw"}, steps: []diffStep{
			img("convert", "-C", "-n", "-f", "raw", "-O", "raw", "r.raw", "n.raw")}},
		diffCase{name: "backing", setup: setup, images: []string{"o.qcow2"}, steps: []diffStep{
			img("convert", "-C", "-B", "b.raw", "-F", "raw", "-O", "qcow2", "c.qcow2", "o.qcow2")}},
		// Into qcow2 targets of other layouts: data copied into clusters
		// allocated for it, partly covered ones zero around it.
		diffCase{name: "qcow2-4k", setup: setup, images: []string{"o.qcow2"}, steps: []diffStep{
			img("convert", "-C", "-O", "qcow2", "-o", "cluster_size=4k", "c.qcow2", "o.qcow2")}},
		diffCase{name: "qcow2-512-W", setup: setup, images: []string{"o.qcow2"}, steps: []diffStep{
			img("convert", "-C", "-W", "-m", "4", "-O", "qcow2", "-o", "cluster_size=512", "r.raw", "o.qcow2")}},
		diffCase{name: "qcow2-extended-l2", setup: setup, images: []string{"o.qcow2"}, steps: []diffStep{
			img("convert", "-C", "-O", "qcow2", "-o", "extended_l2=on,cluster_size=128k", "c.qcow2", "o.qcow2")}},
		// In place into clusters the target owns; the source has no
		// zero extents (-n without -C turns those into zero clusters
		// in qemu-img, and leaves them unallocated in minivmm).
		diffCase{name: "qcow2-n", setup: append(setup[:len(setup):len(setup)],
			img("create", "-f", "qcow2", "e.qcow2", "3M"),
			qio("-c", "write -P 0x5a 64k 1M", "e.qcow2")), images: []string{"e.qcow2"}, steps: []diffStep{
			img("convert", "-C", "-n", "-f", "raw", "-O", "qcow2", "n.raw", "e.qcow2")}},
		diffCase{name: "refusals", setup: setup, steps: []diffStep{
			img("convert", "-C", "-c", "-O", "qcow2", "c.qcow2", "o.qcow2"),
			img("convert", "-C", "-S", "0", "-O", "raw", "c.qcow2", "o.raw"),
			img("convert", "-C", "-S", "64k", "-O", "raw", "c.qcow2", "o.raw"),
			img("convert", "-C", "--salvage", "-O", "raw", "c.qcow2", "o.raw"),
			img("convert", "-C", "--salvage", "-c", "-O", "qcow2", "c.qcow2", "o.qcow2"),
			img("convert", "-C", "-S", "4k", "--salvage", "-O", "raw", "c.qcow2", "o.raw"),
		}},
	)
	runDiffCases(t, cases)
}
