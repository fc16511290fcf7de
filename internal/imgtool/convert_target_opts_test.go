package imgtool

import "testing"

// TestImgConvertTargetImageOptsInterop: convert -n --target-image-opts
// (the target an option string) into qcow2 and raw, with -C, and its
// refusals (without -n, with -O, a target that does not open), by both
// tools: output, status, and the images.
func TestImgConvertTargetImageOptsInterop(t *testing.T) {
	setup := []diffStep{
		img("create", "-f", "raw", "s.raw", "3M"),
		qio("-f", "raw", "-c", "write -P 7 0 1M", "-c", "write -P 8 2M 100k", "s.raw"),
		img("create", "-f", "qcow2", "t.qcow2", "3M"),
		qio("-c", "write -P 1 0 3M", "t.qcow2"),
		img("create", "-f", "raw", "r.raw", "4M"),
	}
	q := "driver=qcow2,file.driver=file,file.filename=t.qcow2"
	cases := []diffCase{
		{name: "qcow2", setup: setup, images: []string{"t.qcow2"}, steps: []diffStep{
			img("convert", "-n", "--target-image-opts", "s.raw", q)}},
		{name: "qcow2-C", setup: setup, images: []string{"t.qcow2"}, steps: []diffStep{
			img("convert", "-C", "-n", "--target-image-opts", "-f", "raw", "s.raw", q)}},
		{name: "raw", setup: setup, images: []string{"r.raw"}, steps: []diffStep{
			img("convert", "-n", "--target-image-opts", "-f", "raw", "s.raw", "driver=raw,file.driver=file,file.filename=r.raw")}},
		{name: "refusals", setup: setup, images: []string{"t.qcow2"}, steps: []diffStep{
			img("convert", "--target-image-opts", "s.raw", q),
			img("convert", "--target-image-opts", "-O", "qcow2", "s.raw", q),
			img("convert", "-n", "--target-image-opts", "-O", "qcow2", "s.raw", q),
			img("convert", "-n", "--target-image-opts", "-C", "-c", "s.raw", q),
			img("convert", "-n", "--target-image-opts", "-o", "cluster_size=4k", "s.raw", q),
			img("convert", "-n", "--target-image-opts", "s.raw", "driver=qcow2,file.driver=file,file.filename=nonexistent.qcow2"),
		}},
	}
	runDiffCases(t, cases)
}
