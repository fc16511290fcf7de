package imgtool

import (
	"strings"
	"testing"
)

// TestImgSnapshotInterop runs qemu-img snapshot's command lines by both
// tools on copies of the same images.
func TestImgSnapshotInterop(t *testing.T) {
	mk := func(opts string) []diffStep {
		return []diffStep{
			img("create", "-f", "qcow2", "-o", opts, "a.qcow2", "1M"),
			qio("-c", "write -P 1 0 64k", "-c", "write -c -P 5 128k 64k", "-c", "write -P 7 900k 8k", "a.qcow2"),
		}
	}
	std := mk("cluster_size=65536")
	a := []string{"a.qcow2"}
	cases := []diffCase{
		{name: "create-list", setup: std, images: a, steps: []diffStep{
			img("snapshot", "-c", "s1", "a.qcow2"), img("snapshot", "-l", "a.qcow2"),
			img("snapshot", "-c", "s1", "a.qcow2"), img("snapshot", "-c", "", "a.qcow2"),
			img("snapshot", "-l", "a.qcow2"), img("snapshot", "a.qcow2"),
		}},
		{name: "apply-delete", setup: std, images: a, steps: []diffStep{
			img("snapshot", "-c", "s1", "a.qcow2"),
			qio("-c", "write -P 2 0 64k", "-c", "write -P 3 192k 64k", "-c", "discard 128k 64k", "a.qcow2"),
			img("snapshot", "-c", "s2", "a.qcow2"),
			qio("-c", "write -P 4 64k 64k", "a.qcow2"),
			img("snapshot", "-a", "s1", "a.qcow2"), img("snapshot", "-l", "a.qcow2"),
			img("snapshot", "-a", "2", "a.qcow2"),
			img("snapshot", "-d", "s1", "a.qcow2"),
			qio("-c", "write -P 6 0 4k", "a.qcow2"),
			img("snapshot", "-d", "2", "a.qcow2"), img("snapshot", "-d", "s2", "a.qcow2"),
			img("snapshot", "-l", "a.qcow2"),
		}},
		{name: "apply-other-size", setup: std, images: a, steps: []diffStep{
			img("snapshot", "-c", "small", "a.qcow2"),
			img("resize", "a.qcow2", "300M"),
			qio("-c", "write -P 9 200M 64k", "a.qcow2"),
			img("snapshot", "-c", "big", "a.qcow2"),
			img("snapshot", "-a", "small", "a.qcow2"),
			img("snapshot", "-d", "small", "a.qcow2"),
			img("snapshot", "-a", "big", "a.qcow2"),
		}},
		{name: "errors", setup: append(std, img("create", "-f", "raw", "r.raw", "64k")), images: []string{"a.qcow2", "r.raw"}, steps: []diffStep{
			img("snapshot", "-a", "nosuch", "a.qcow2"), img("snapshot", "-d", "nosuch", "a.qcow2"),
			img("snapshot", "-c", "x", "-a", "y", "a.qcow2"), img("snapshot", "-l"),
			img("snapshot", "-l", "a.qcow2", "b"), img("snapshot", "-f", "qcow2", "-l", "a.qcow2"),
			img("snapshot", "-U", "-c", "x", "a.qcow2"), img("snapshot", "-c"),
			img("snapshot", "-c", "s", "r.raw"), img("snapshot", "-a", "s", "r.raw"),
			img("snapshot", "-d", "s", "r.raw"), img("snapshot", "-l", "r.raw"),
			img("snapshot", "-l", "nonexistent.qcow2"),
			img("snapshot", "-U", "-l", "a.qcow2"),
			img("snapshot", "--object", "secret,id=s0,data=x", "-l", "a.qcow2"),
			img("snapshot", "--object", "foo,id=x", "-l", "a.qcow2"),
			img("snapshot", "--image-opts", "-c", "io", "driver=qcow2,file.driver=file,file.filename=a.qcow2"),
			img("snapshot", "--image-opts", "-l", "driver=qcow2,file.driver=file,file.filename=a.qcow2"),
		}},
		{name: "v2", setup: mk("compat=0.10"), images: a, steps: []diffStep{
			img("snapshot", "-c", "a", "a.qcow2"), qio("-c", "write -P 8 0 128k", "a.qcow2"),
			img("snapshot", "-c", "b", "a.qcow2"), img("snapshot", "-a", "a", "a.qcow2"),
			img("snapshot", "-d", "b", "a.qcow2"),
		}},
		{name: "small-clusters-extl2", setup: mk("cluster_size=16384,extended_l2=on"), images: a, steps: []diffStep{
			img("snapshot", "-c", "a", "a.qcow2"), qio("-c", "write -P 8 2k 300k", "a.qcow2"),
			img("snapshot", "-c", "b", "a.qcow2"), qio("-c", "write -z 0 64k", "a.qcow2"),
			img("snapshot", "-a", "a", "a.qcow2"), img("snapshot", "-d", "a", "a.qcow2"),
			img("snapshot", "-a", "b", "a.qcow2"),
		}},
		{name: "refcount-overflow", setup: mk("refcount_bits=2,cluster_size=512"), images: a, better: true, steps: []diffStep{
			img("snapshot", "-c", "a", "a.qcow2"), img("snapshot", "-l", "a.qcow2"),
		}},
		{name: "lazy-refcounts", setup: mk("lazy_refcounts=on,cluster_size=512"), images: a, steps: []diffStep{
			img("snapshot", "-c", "a", "a.qcow2"), img("snapshot", "-c", "b", "a.qcow2"),
			img("snapshot", "-c", "c", "a.qcow2"), img("snapshot", "-d", "a", "a.qcow2"),
			img("snapshot", "-c", "d", "a.qcow2"), img("snapshot", "-l", "a.qcow2"),
		}},
		{name: "backing", setup: append(std,
			img("create", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", "o.qcow2"),
			qio("-c", "write -P 3 32k 64k", "o.qcow2")),
			images: []string{"a.qcow2", "o.qcow2"}, steps: []diffStep{
				img("snapshot", "-c", "a", "o.qcow2"), qio("-c", "write -P 4 0 256k", "o.qcow2"),
				img("snapshot", "-a", "a", "o.qcow2"), img("snapshot", "-l", "o.qcow2"),
			}},
	}
	runDiffCases(t, cases)
}

// TestImgConvertSnapshotInterop: convert -l, by both tools.
func TestImgConvertSnapshotInterop(t *testing.T) {
	setup := []diffStep{
		img("create", "-f", "qcow2", "c.qcow2", "1M"),
		qio("-c", "write -P 1 0 64k", "-c", "write -c -P 4 256k 64k", "c.qcow2"),
		img("snapshot", "-c", "s1", "c.qcow2"),
		img("resize", "c.qcow2", "3M"),
		qio("-c", "write -P 2 0 64k", "-c", "write -P 3 2M 64k", "c.qcow2"),
		img("snapshot", "-c", "s2", "c.qcow2"),
		img("create", "-f", "raw", "r.raw", "64k"),
	}
	conv := func(l string) []diffStep {
		return []diffStep{img("convert", "-l", l, "-O", "qcow2", "c.qcow2", "o.qcow2"), img("convert", "-l", l, "-O", "raw", "c.qcow2", "o.raw")}
	}
	out := []string{"o.qcow2", "o.raw"}
	cases := []diffCase{
		{name: "name", setup: setup, images: out, steps: conv("snapshot.name=s1")},
		{name: "id", setup: setup, images: out, steps: conv("snapshot.id=2")},
		{name: "both", setup: setup, images: out, steps: conv("snapshot.id=1,snapshot.name=s1")},
		{name: "bare-id", setup: setup, images: out, steps: conv("1")},
		{name: "bare-name", setup: setup, images: out, steps: conv("s2")},
		{name: "errors", setup: setup, steps: []diffStep{
			img("convert", "-l", "snapshot.id=1,snapshot.name=s2", "-O", "raw", "c.qcow2", "o.raw"),
			img("convert", "-l", "nosuch", "-O", "raw", "c.qcow2", "o.raw"),
			img("convert", "-l", "", "-O", "raw", "c.qcow2", "o.raw"),
			img("convert", "-l", "snapshot.foo=1", "-O", "raw", "c.qcow2", "o.raw"),
			img("convert", "-l", "1", "-O", "raw", "c.qcow2", "c.qcow2", "o.raw"),
			img("convert", "-l", "1", "-O", "raw", "r.raw", "o.raw"),
		}},
	}
	runDiffCases(t, cases)
}

// FuzzConvertSnapshotParam: -l's argument never panics, and what it
// accepts names an ID or a name.
func FuzzConvertSnapshotParam(f *testing.F) {
	for _, s := range []string{"snapshot.id=1", "snapshot.name=a,,b,snapshot.id=2", "s1", "", "snapshot.foo=1", "snapshot.name"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		var out, errb strings.Builder
		e := &env{prog: "qemu-img", stdout: &out, stderr: &errb}
		sn, ok := e.parseConvertSnapshot(arg)
		if ok && sn == nil || !ok && errb.Len() == 0 {
			t.Fatalf("%q: %v %v %q", arg, sn, ok, errb.String())
		}
	})
}
