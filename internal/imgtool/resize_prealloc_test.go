package imgtool

import "testing"

// TestImgResizePreallocInterop: resize --preallocation=off|metadata|
// falloc|full growing qcow2 (with data, unaligned sizes, extended L2, a
// backing file longer than the image, version 2) and raw, and its
// refusals, by both tools: output, status, and the images (map, check,
// compare).
func TestImgResizePreallocInterop(t *testing.T) {
	setup := []diffStep{
		img("create", "-f", "qcow2", "d.qcow2", "1000k"),
		qio("-c", "write -P 1 0 100k", "-c", "write -P 2 900k 100k", "d.qcow2"),
		img("create", "-f", "qcow2", "-o", "extended_l2=on", "e.qcow2", "1000k"),
		qio("-c", "write -P 1 0 10k", "e.qcow2"),
		img("create", "-f", "raw", "b.raw", "4M"),
		qio("-f", "raw", "-c", "write -P 9 0 4M", "b.raw"),
		img("create", "-f", "qcow2", "-b", "b.raw", "-F", "raw", "o.qcow2", "1M"),
		qio("-c", "write -P 3 64k 64k", "o.qcow2"),
		img("create", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4k", "v2.qcow2", "1M"),
		qio("-c", "write -P 4 4k 4k", "v2.qcow2"),
		img("create", "-f", "raw", "r.raw", "1M"),
		// With an external data file, new clusters sit at their guest
		// offsets in it, with no refcount (range allocation through the
		// one place that knows the data file).
		img("create", "-f", "qcow2", "-o", "data_file=x.data", "x.qcow2", "1M"),
		qio("-c", "write -P 5 64k 64k", "x.qcow2"),
	}
	var cases []diffCase
	for _, m := range []string{"off", "metadata", "falloc", "full"} {
		cases = append(cases,
			diffCase{name: "data-" + m, setup: setup, images: []string{"d.qcow2"}, steps: []diffStep{
				img("resize", "--preallocation="+m, "d.qcow2", "3333k")}},
			diffCase{name: "twice-" + m, setup: setup, images: []string{"d.qcow2"}, steps: []diffStep{
				img("resize", "--preallocation", m, "d.qcow2", "+1000k"),
				img("resize", "-q", "--preallocation="+m, "d.qcow2", "+1M")}},
			diffCase{name: "extended-l2-" + m, setup: setup, images: []string{"e.qcow2"}, steps: []diffStep{
				img("resize", "--preallocation="+m, "e.qcow2", "+1M")}},
			diffCase{name: "v2-" + m, setup: setup, images: []string{"v2.qcow2"}, steps: []diffStep{
				img("resize", "--preallocation="+m, "v2.qcow2", "2M")}},
			diffCase{name: "data-file-" + m, setup: setup, images: []string{"x.qcow2"}, steps: []diffStep{
				img("resize", "--preallocation="+m, "x.qcow2", "3M")}},
		)
		if m != "metadata" {
			cases = append(cases, diffCase{name: "raw-" + m, setup: setup, images: []string{"r.raw"}, steps: []diffStep{
				img("resize", "-f", "raw", "--preallocation="+m, "r.raw", "+1M")}})
		}
	}
	cases = append(cases,
		diffCase{name: "backing-metadata", setup: setup, images: []string{"o.qcow2"}, steps: []diffStep{
			img("resize", "--preallocation=metadata", "o.qcow2", "3M")}},
		diffCase{name: "backing-falloc", setup: setup, images: []string{"o.qcow2"}, steps: []diffStep{
			img("resize", "--preallocation=falloc", "o.qcow2", "3000k")}},
		diffCase{name: "backing-full", setup: setup, images: []string{"o.qcow2"}, steps: []diffStep{
			img("resize", "--preallocation=full", "o.qcow2", "+2M")}},
		diffCase{name: "shrunk-then-metadata", setup: setup, images: []string{"d.qcow2"}, steps: []diffStep{
			img("resize", "--shrink", "d.qcow2", "520k"),
			img("resize", "--preallocation=metadata", "d.qcow2", "2M")}},
		diffCase{name: "refusals", setup: setup, images: []string{"d.qcow2", "r.raw"}, steps: []diffStep{
			img("resize", "--preallocation=bogus", "d.qcow2", "2M"),
			img("resize", "--preallocation=metadata", "d.qcow2", "+0"),
			img("resize", "--preallocation=metadata", "d.qcow2", "1000k"),
			img("resize", "--preallocation=falloc", "d.qcow2", "500k"),
			img("resize", "--preallocation=metadata", "--shrink", "d.qcow2", "500k"),
			img("resize", "--preallocation=metadata", "nonexistent.qcow2", "2M"),
			img("resize", "-f", "raw", "--preallocation=metadata", "r.raw", "2M"),
		}},
	)
	runDiffCases(t, cases)
}
