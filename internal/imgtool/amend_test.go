package imgtool

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestImgAmendInterop: qemu-img amend's command lines by both tools, and
// the images they leave.
func TestImgAmendInterop(t *testing.T) {
	mk := func(opts string) []diffStep {
		return []diffStep{
			img("create", "-f", "qcow2", "-o", opts, "e.qcow2", "2M"),
			qio("-c", "write -P 1 0 64k", "-c", "write -c -P 2 1M 64k", "-c", "write -z 1536k 64k", "e.qcow2"),
			img("snapshot", "-c", "s", "e.qcow2"),
			qio("-c", "write -P 3 0 4k", "e.qcow2"),
		}
	}
	a := []string{"e.qcow2"}
	const io = "driver=qcow2,file.driver=file,file.filename=e.qcow2"
	am := func(args ...string) diffStep { return img(append([]string{"amend"}, args...)...) }
	var cases []diffCase
	for _, bits := range []string{"1", "2", "4", "8", "32", "64", "16"} {
		cases = append(cases, diffCase{name: "refcount_bits=" + bits, setup: mk("cluster_size=4096"), images: a,
			steps: []diffStep{am("-o", "refcount_bits="+bits, "e.qcow2"), qio("-c", "write -P 4 8k 64k", "e.qcow2"),
				am("-o", "refcount_bits=16", "e.qcow2")}})
	}
	cases = append(cases,
		diffCase{name: "lazy", setup: mk("cluster_size=65536"), images: a, steps: []diffStep{
			am("-o", "lazy_refcounts=on", "e.qcow2"), am("--object", "secret,id=s0,data=x", "-o", "lazy_refcounts=off", "e.qcow2"),
			am("--image-opts", "-o", "lazy_refcounts=on", io), am("-q", "-o", "lazy_refcounts=on,refcount_bits=8", "e.qcow2"),
			am("-f", "qcow2", "-t", "none", "-o", "size=4M", "e.qcow2"), am("-o", "size=1M", "e.qcow2"),
		}},
		diffCase{name: "v2", setup: mk("compat=0.10"), images: a, steps: []diffStep{
			am("-o", "lazy_refcounts=on", "e.qcow2"), am("-o", "refcount_bits=8", "e.qcow2"), am("-o", "refcount_bits=16", "e.qcow2"),
			am("-o", "compat=1.1", "e.qcow2"), qio("-c", "write -z 0 4k", "e.qcow2"),
		}},
		diffCase{name: "upgrade-backing", setup: append(mk("compat=0.10"),
			img("create", "-f", "qcow2", "-o", "compat=0.10", "-b", "e.qcow2", "-F", "qcow2", "o.qcow2"),
			qio("-c", "write -P 7 4k 8k", "o.qcow2")),
			images: []string{"o.qcow2"}, steps: []diffStep{
				am("-o", "compat=1.1,lazy_refcounts=on,refcount_bits=4", "o.qcow2"), qio("-c", "write -P 8 0 4k", "o.qcow2"),
			}},
		diffCase{name: "downgrade", setup: []diffStep{
			img("create", "-f", "qcow2", "-o", "lazy_refcounts=on", "b.qcow2", "2M"), qio("-c", "write -P 1 0 128k", "b.qcow2"),
			img("snapshot", "-c", "s", "b.qcow2"), qio("-c", "write -P 2 64k 4k", "b.qcow2"),
			img("create", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "o.qcow2"), qio("-c", "write -P 3 4k 8k", "o.qcow2"),
			img("create", "-f", "qcow2", "-o", "refcount_bits=8", "r8.qcow2", "1M"),
			img("create", "-f", "qcow2", "-o", "extended_l2=on", "x.qcow2", "1M"),
			img("create", "-f", "qcow2", "s.qcow2", "1M"), img("snapshot", "-c", "s", "s.qcow2"), img("resize", "s.qcow2", "2M"),
		}, images: []string{"b.qcow2", "o.qcow2", "r8.qcow2", "x.qcow2", "s.qcow2"}, steps: []diffStep{
			am("-o", "compat=0.10", "b.qcow2"), am("-o", "compat=0.10", "o.qcow2"), qio("-c", "write -P 4 0 4k", "o.qcow2"),
			am("-o", "compat=0.10", "r8.qcow2"), am("-o", "compat=0.10", "x.qcow2"),
			am("-o", "compat=0.10", "s.qcow2"), am("-o", "compat=1.1", "o.qcow2"),
		}},
		diffCase{name: "downgrade-zero", setup: []diffStep{
			img("create", "-f", "qcow2", "b.qcow2", "2M"), qio("-c", "write -P 1 0 2M", "b.qcow2"),
			img("create", "-f", "qcow2", "-o", "cluster_size=4096,lazy_refcounts=on", "z.qcow2", "2M"),
			img("create", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "b.qcow2", "-F", "qcow2", "o.qcow2", "2M"),
			qio("-c", "write -P 2 0 128k", "-c", "write -z 8k 40k", "-c", "write -z 256k 1M", "-c", "write -P 3 300k 4k", "z.qcow2"),
			qio("-c", "write -P 2 0 128k", "-c", "write -z 8k 40k", "-c", "write -z 256k 1M", "-c", "write -P 3 300k 4k", "o.qcow2"),
		}, images: []string{"z.qcow2", "o.qcow2"}, steps: []diffStep{
			am("-o", "compat=0.10", "z.qcow2"), am("-o", "compat=0.10", "o.qcow2"), qio("-c", "write -P 4 4k 64k", "o.qcow2"),
			am("-o", "compat=1.1", "z.qcow2"),
		}},
		diffCase{name: "downgrade-snapshot-zero", setup: []diffStep{
			img("create", "-f", "qcow2", "b.qcow2", "256k"), qio("-c", "write -P 1 0 256k", "b.qcow2"),
			img("create", "-f", "qcow2", "-o", "cluster_size=512", "z.qcow2", "256k"),
			img("create", "-f", "qcow2", "-o", "cluster_size=512", "-b", "b.qcow2", "-F", "qcow2", "o.qcow2", "256k"),
			// With 512-byte clusters an L2 table covers 32k: zero
			// clusters, allocated and not, in tables the snapshots share
			// with the active image (0-32k), in tables only a snapshot
			// holds (32k-64k, which the active image rewrites after s1),
			// and in the active image's own (64k-96k).
			qio("-c", "write -P 2 0 96k", "-c", "write -z 8k 2k", "-c", "write -z -u 12k 1k", "-c", "write -z 40k 2k", "-c", "write -z 128k 4k", "z.qcow2"),
			qio("-c", "write -P 2 0 96k", "-c", "write -z 8k 2k", "-c", "write -z -u 12k 1k", "-c", "write -z 40k 2k", "-c", "write -z 128k 4k", "o.qcow2"),
			img("snapshot", "-c", "s1", "z.qcow2"), img("snapshot", "-c", "s1", "o.qcow2"),
			qio("-c", "write -P 3 32k 32k", "-c", "write -z -u 70k 1k", "-c", "write -z 160k 1k", "z.qcow2"),
			qio("-c", "write -P 3 32k 32k", "-c", "write -z -u 70k 1k", "-c", "write -z 160k 1k", "o.qcow2"),
			img("snapshot", "-c", "s2", "z.qcow2"), img("snapshot", "-c", "s2", "o.qcow2"),
		}, images: []string{"z.qcow2", "o.qcow2"}, steps: []diffStep{
			am("-o", "compat=0.10", "z.qcow2"), am("-o", "compat=0.10", "o.qcow2"),
			qio("-c", "write -P 5 8k 4k", "o.qcow2"), am("-o", "compat=1.1", "z.qcow2"),
		}},
		diffCase{name: "overflow", setup: []diffStep{
			img("create", "-f", "qcow2", "-o", "refcount_bits=2,cluster_size=512", "e.qcow2", "64k"),
			qio("-c", "write -c -P 1 0 512", "-c", "write -c -P 2 512 512", "-c", "write -c -P 3 1k 512", "e.qcow2"),
		}, images: a, steps: []diffStep{
			am("-o", "refcount_bits=1", "e.qcow2"),
		}},
		diffCase{name: "errors", setup: append(mk("cluster_size=65536"), img("create", "-f", "raw", "r.raw", "1M")), images: a, steps: []diffStep{
			am("-o", "compat=0.10,lazy_refcounts=on", "e.qcow2"), am("-o", "refcount_bits=8,compat=0.10", "e.qcow2"),
			am("e.qcow2"), am("-o", "cluster_size=4k", "e.qcow2"), am("-o", "foo=1", "e.qcow2"), am("-o", "compat=0.11", "e.qcow2"), am("-o", "compat=0.10,refcount_bits=16", "-o", "lazy_refcounts=on", "e.qcow2"),
			am("-o", "lazy_refcounts=maybe", "e.qcow2"), am("-o", "refcount_bits=3", "e.qcow2"), am("-o", "refcount_bits=x", "e.qcow2"),
			am("-o", "size=x", "e.qcow2"), am("-o", "data_file=x", "e.qcow2"),
			am("-o", "backing_file=x", "e.qcow2"), am("-o", "encrypt.format=luks", "e.qcow2"), am("-U", "-o", "size=1M", "e.qcow2"),
			am("-o", "refcount_bits=1", "-t", "bogus", "e.qcow2"), am("-o", "refcount_bits=1", "a", "b"), am("-o", "refcount_bits=1"),
			am("-o", "size=2M", "r.raw"), am("-f", "raw", "-o", "size=2M", "r.raw"), am("-o", "compat=1.1", "e.qcow2"),
			am("-p", "-o", "lazy_refcounts=on", "e.qcow2"),
		}},
	)
	runDiffCases(t, cases)
}

// TestImgAmendDowngradeKeepsSnapshots: an allocated zero cluster of the
// active image whose host cluster a snapshot still reads as data (the
// active image wrote zeroes over it after the snapshot, keeping the
// allocation) gets a fresh cluster of zeroes; the snapshot keeps its
// data. qemu-img 7.2 zeroes the shared cluster in place, changing the
// snapshot, and leaves OFLAG_COPIED on it (check then reports
// corruptions).
func TestImgAmendDowngradeKeepsSnapshots(t *testing.T) {
	needQemuCheck(t)
	dir := t.TempDir()
	for _, s := range []diffStep{
		img("create", "-f", "qcow2", "-o", "cluster_size=4096", "z.qcow2", "2M"),
		qio("-c", "write -P 2 0 128k", "-c", "write -z 8k 16k", "-c", "write -z 256k 64k", "z.qcow2"),
		img("snapshot", "-c", "s1", "z.qcow2"),
		qio("-c", "write -P 3 0 4k", "-c", "write -z 1536k 8k", "z.qcow2"),
		img("snapshot", "-c", "s2", "z.qcow2"),
		qio("-c", "write -z 64k 8k", "-c", "write -P 4 1M 4k", "z.qcow2"),
	} {
		if _, errs, code := runReal(t, dir, s.toolName(), s.args...); code != 0 {
			t.Fatalf("setup %s %q: %s", s.toolName(), s.args, errs)
		}
	}
	orig := t.TempDir()
	copyDir(t, dir, orig)
	if _, errs, code := imgIn(t, dir, "amend", "-o", "compat=0.10", "z.qcow2"); code != 0 {
		t.Fatalf("amend: %d %s", code, errs)
	}
	if out, errs, code := runReal(t, dir, "qemu-img", "check", "z.qcow2"); code != 0 {
		t.Fatalf("qemu-img check: %d %s%s", code, out, errs)
	}
	if out, _, _ := runReal(t, dir, "qemu-img", "info", "z.qcow2"); !strings.Contains(out, "compat: 0.10") {
		t.Fatalf("not downgraded: %s", out)
	}
	if _, errs, code := runReal(t, dir, "qemu-img", "compare", "z.qcow2", filepath.Join(orig, "z.qcow2")); code != 0 {
		t.Errorf("active image changed: %s", errs)
	}
	for _, id := range []string{"1", "2"} {
		a, b := t.TempDir(), t.TempDir()
		copyDir(t, dir, a)
		copyDir(t, orig, b)
		for _, d := range []string{a, b} {
			if _, errs, code := runReal(t, d, "qemu-img", "snapshot", "-a", id, "z.qcow2"); code != 0 {
				t.Fatalf("snapshot -a %s: %s", id, errs)
			}
		}
		if _, errs, code := runReal(t, a, "qemu-img", "compare", "z.qcow2", filepath.Join(b, "z.qcow2")); code != 0 {
			t.Errorf("snapshot %s changed by the downgrade: %s", id, errs)
		}
	}
}
