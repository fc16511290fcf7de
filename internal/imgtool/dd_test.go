package imgtool

import (
	"strings"
	"testing"
)

// TestImgDdInterop: qemu-img dd's command lines by both tools.
func TestImgDdInterop(t *testing.T) {
	setup := []diffStep{
		img("create", "-f", "qcow2", "d.qcow2", "1M"),
		qio("-c", "write -P 1 0 64k", "-c", "write -P 2 64k 64k", "-c", "write -P 3 128k 64k", "-c", "write -P 4 1000k 3k", "d.qcow2"),
	}
	var cases []diffCase
	for i, a := range []string{
		"if=d.qcow2 of=o.raw bs=64k count=2 skip=1", "if=d.qcow2 of=o.raw bs=64k skip=1", "if=d.qcow2 of=o.raw",
		"if=d.qcow2 of=o.raw skip=5000", "-O qcow2 if=d.qcow2 of=o.qcow2 bs=4k count=3", "-O qcow2 if=d.qcow2 of=o.qcow2 bs=1M",
		"-f raw if=d.qcow2 of=o.raw count=1", "-U if=d.qcow2 of=o.raw bs=1k count=1", "if=d.qcow2 of=o.raw bs=1000 count=3 skip=1",
		"if=d.qcow2 of=o.raw bs=1000 skip=1", "--image-opts if=driver=qcow2,file.driver=file,file.filename=d.qcow2 of=o.raw count=7",
	} {
		args := append([]string{"dd"}, strings.Fields(a)...)
		out := "o.raw"
		if strings.Contains(a, "of=o.qcow2") {
			out = "o.qcow2"
		}
		cases = append(cases, diffCase{name: "ok" + string(rune('a'+i)), setup: setup, images: []string{out}, steps: []diffStep{img(args...)}})
	}
	var errs []diffStep
	for _, a := range []string{
		"if=d.qcow2", "if=d.qcow2 of=x bs=0", "if=d.qcow2 of=x bs=3G", "if=d.qcow2 of=x bs=x", "if=d.qcow2 of=x count=-1",
		"if=d.qcow2 of=x skip=y", "if=d.qcow2 of=x foo=1", "if=d.qcow2 of=x junk", "-O foo if=d.qcow2 of=x",
		"if=nonexist of=x", "if=d.qcow2 of=/nonexist/x", "-x if=d.qcow2 of=x",
	} {
		errs = append(errs, img(append([]string{"dd"}, strings.Fields(a)...)...))
	}
	cases = append(cases, diffCase{name: "errors", setup: setup, steps: errs})
	runDiffCases(t, cases)
}

// FuzzDdOperands: dd's operands and --object's argument never panic, and
// what is refused says why.
func FuzzDdOperands(f *testing.F) {
	for _, s := range []string{"if=a of=b bs=64k count=2 skip=1", "if=a", "bs=0", "junk", "count=-1 skip=1E", "secret,id=a,data=b", "secret,id=a,file=/nonexistent", "foo,id=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		var out, errb strings.Builder
		e := &env{prog: "qemu-img", stdout: &out, stderr: &errb}
		d, ok := e.parseDd(strings.Fields(arg))
		if ok && (d.bs < 1 || d.count < 0 || d.skip < 0 || !d.hasIn || !d.hasOut) || !ok && errb.Len() == 0 {
			t.Fatalf("%q: %+v %v %q", arg, d, ok, errb.String())
		}
		errb.Reset()
		if !e.object(arg) && errb.Len() == 0 {
			t.Fatalf("--object %q refused silently", arg)
		}
	})
}
