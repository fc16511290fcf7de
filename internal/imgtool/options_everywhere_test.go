package imgtool

import (
	"strings"
	"testing"
)

// TestImgOptionsEverywhereInterop: preallocation for create and
// convert, and -U, --object and --image-opts on every subcommand that
// takes them, by both tools.
func TestImgOptionsEverywhereInterop(t *testing.T) {
	setup := []diffStep{
		img("create", "-f", "qcow2", "d.qcow2", "2M"),
		qio("-c", "write -P 1 0 64k", "-c", "write -P 2 1M 4k", "d.qcow2"),
		img("create", "-f", "qcow2", "e.qcow2", "2M"),
		qio("-c", "write -P 1 0 64k", "e.qcow2"),
	}
	var cases []diffCase
	for _, p := range []string{"off", "metadata", "falloc", "full"} {
		for _, f := range []string{"qcow2", "raw"} {
			if f == "raw" && p == "metadata" {
				continue
			}
			cases = append(cases, diffCase{name: "prealloc-" + p + "-" + f, setup: setup, images: []string{"n." + f, "o." + f},
				steps: []diffStep{
					img("create", "-q", "-f", f, "-o", "preallocation="+p, "n."+f, "1M"),
					img("convert", "-O", f, "-o", "preallocation="+p, "d.qcow2", "o."+f),
				}})
		}
	}
	const io = "driver=qcow2,file.driver=file,file.filename="
	const obj = "secret,id=sec0,data=x"
	var steps []diffStep
	for _, a := range []string{
		"info -U d.qcow2", "info --force-share d.qcow2", "info --object " + obj + " d.qcow2", "info --image-opts " + io + "d.qcow2",
		"check -U d.qcow2", "check --object " + obj + " d.qcow2", "check --image-opts " + io + "d.qcow2",
		"compare -U d.qcow2 e.qcow2", "compare --object " + obj + " d.qcow2 e.qcow2", "compare --image-opts " + io + "d.qcow2 " + io + "e.qcow2",
		"compare -s -F qcow2 -f qcow2 d.qcow2 e.qcow2", "compare -s d.qcow2 e.qcow2",
		"map -U d.qcow2", "map --image-opts " + io + "d.qcow2",
		"convert -U -O raw d.qcow2 c1.raw", "convert --object " + obj + " -O raw d.qcow2 c2.raw",
		"convert --image-opts -O raw " + io + "d.qcow2 c3.raw",
		"snapshot -U -l d.qcow2", "measure -U -O qcow2 d.qcow2",
		"bench -U -c 1 d.qcow2", "bench --object " + obj + " -c 1 d.qcow2", "bench --image-opts -c 1 " + io + "d.qcow2",
		"resize --object " + obj + " e.qcow2 3M", "resize --image-opts " + io + "e.qcow2 4M",
		"rebase --object " + obj + " -u -b '' e.qcow2", "rebase -U -u -b '' e.qcow2", "rebase --image-opts -u -b '' " + io + "e.qcow2",
		"commit --object " + obj + " e.qcow2", "commit --image-opts " + io + "e.qcow2",
		"create --object " + obj + " -f qcow2 n.qcow2 1M",
	} {
		steps = append(steps, img(splitArgs(a)...))
	}
	cases = append(cases, diffCase{name: "everywhere", setup: setup, steps: steps, images: []string{"d.qcow2", "e.qcow2"}})
	runDiffCases(t, cases)
}

// splitArgs splits at spaces, ” being an empty argument.
func splitArgs(s string) []string {
	f := strings.Fields(s)
	for i := range f {
		if f[i] == "''" {
			f[i] = ""
		}
	}
	return f
}
