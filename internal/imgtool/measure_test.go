package imgtool

import (
	"strings"
	"testing"
)

// TestImgMeasureInterop: qemu-img measure's command lines by both tools.
func TestImgMeasureInterop(t *testing.T) {
	setup := []diffStep{
		img("create", "-f", "qcow2", "d.qcow2", "5M"),
		qio("-c", "write -P 1 0 64k", "-c", "write -P 2 100k 1k", "-c", "write -z 1M 1M", "-c", "write -c -P 3 3M 64k", "d.qcow2"),
		img("snapshot", "-c", "s", "d.qcow2"),
		qio("-c", "write -P 4 4M 512k", "d.qcow2"),
		img("create", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4096", "v2.qcow2", "3M"),
		qio("-c", "write -P 1 8k 8k", "v2.qcow2"),
		img("create", "-f", "qcow2", "-b", "d.qcow2", "-F", "qcow2", "o.qcow2"),
		qio("-c", "write -P 5 2M 4k", "o.qcow2"),
		img("create", "-f", "raw", "r.raw", "1000k"),
		qio("-f", "raw", "-c", "write -P 1 0 4k", "r.raw"),
	}
	var steps []diffStep
	for _, a := range []string{
		"--size 1G -O qcow2", "-O qcow2 d.qcow2", "--output=json -O qcow2 d.qcow2", "-O raw d.qcow2", "--size 1G",
		"--size 1G -O qcow2 -o cluster_size=4k,refcount_bits=1,preallocation=full", "-O qcow2 -o compat=0.10 d.qcow2",
		"d.qcow2 --size 1G", "", "-O qcow2 --size 1G -o extended_l2=on --output=json", "--size x -O qcow2",
		"--size 1G -O foo", "--size 1G -O qcow2 --output=xml", "--size 1G -O qcow2 -o cluster_size=3",
		"--size 1G -O qcow2 -o foo=1", "--size 1G -O qcow2 -o preallocation=metadata", "--size 100T -O qcow2 -o cluster_size=512",
		"-O qcow2 -o preallocation=full d.qcow2", "-O qcow2 -o preallocation=falloc d.qcow2", "-O qcow2 -l s d.qcow2",
		"-O qcow2 -l snapshot.id=1 --output=json d.qcow2", "-O qcow2 v2.qcow2", "-O qcow2 -o cluster_size=512 o.qcow2",
		"-O qcow2 r.raw", "-f raw -O qcow2 r.raw", "--size 1000 -O raw", "-O qcow2 -o refcount_bits=64,cluster_size=2M d.qcow2",
		"-U -O qcow2 d.qcow2", "--image-opts -O qcow2 driver=qcow2,file.driver=file,file.filename=d.qcow2",
		"-O qcow2 nonexistent.qcow2", "-O qcow2 d.qcow2 v2.qcow2",
	} {
		steps = append(steps, img(append([]string{"measure"}, strings.Fields(a)...)...))
	}
	runDiffCases(t, []diffCase{{name: "measure", setup: setup, steps: steps}})
}
