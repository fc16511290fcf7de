package imgtool

// img convert -B/-F, several sources, --target-is-zero and -p, side by
// side with qemu-img: the same messages, exit status, progress lines and
// output image (its map, check, info and content).

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// cvRunBoth runs `img convert args` with qemu-img and in-process; "OUT"
// in args names each one's output (q.out, m.out in dir). Results come
// back with dir and the output names normalized.
func cvRunBoth(t *testing.T, dir string, args []string) (ours, theirs imgResult) {
	t.Helper()
	subst := func(name string) []string {
		a := []string{"convert"}
		for _, s := range args {
			a = append(a, strings.ReplaceAll(s, "OUT", filepath.Join(dir, name)))
		}
		return a
	}
	norm := func(s, name string) string {
		return strings.ReplaceAll(strings.ReplaceAll(s, filepath.Join(dir, name), "OUT"), dir, "DIR")
	}
	ours, theirs = ourImgRun(subst("m.out")...), qemuImgRun(t, "", subst("q.out")...)
	ours.out, ours.err = norm(ours.out, "m.out"), norm(ours.err, "m.out")
	theirs.out, theirs.err = norm(theirs.out, "q.out"), norm(theirs.err, "q.out")
	return ours, theirs
}

// cvSameImage wants m.out and q.out in dir alike to qemu-img's tools.
func cvSameImage(t *testing.T, dir string) {
	t.Helper()
	m, q := filepath.Join(dir, "m.out"), filepath.Join(dir, "q.out")
	for _, tool := range [][]string{{"map", "--output=json"}, {"check"}, {"info", "--output=json"}} {
		a, _ := exec.Command("qemu-img", append(tool, m)...).CombinedOutput()
		b, _ := exec.Command("qemu-img", append(tool, q)...).CombinedOutput()
		as := strings.ReplaceAll(string(a), m, "OUT")
		bs := strings.ReplaceAll(string(b), q, "OUT")
		if tool[0] == "info" {
			// The files' sizes on the host differ with the write
			// pattern (qemu-img's coroutines); the rest must not.
			as, bs = cvDropLine(as, "actual-size"), cvDropLine(bs, "actual-size")
		}
		if as != bs {
			t.Errorf("qemu-img %s: ours\n%s\nqemu-img's\n%s", strings.Join(tool, " "), as, bs)
		}
	}
	cvIdentical(t, m, q)
}

func cvDropLine(s, key string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, key) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func TestConvertBackingInterop(t *testing.T) {
	t.Parallel()
	imgReadNeedQemu(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	run := func(name string, args ...string) { t.Helper(); imgReadRun(t, name, args...) }
	run("qemu-img", "create", "-q", "-f", "qcow2", p("base.qcow2"), "1M")
	run("qemu-io", "-c", "write -P 1 0 256k", "-c", "write -P 9 960k 64k", p("base.qcow2"))
	run("qemu-img", "create", "-q", "-f", "qcow2", "-b", p("base.qcow2"), "-F", "qcow2", p("top.qcow2"))
	run("qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 64k 64k", "-c", "write -z 128k 64k",
		"-c", "write -P 3 512k 64k", "-c", "write -P 0 640k 64k", "-c", "write -P 4 700k 4k", p("top.qcow2"))
	run("qemu-img", "convert", "-O", "raw", p("top.qcow2"), p("top.raw"))
	run("qemu-img", "create", "-q", "-f", "qcow2", p("plain.qcow2"), "1M")
	run("qemu-io", "-c", "write -P 5 256k 64k", p("plain.qcow2"))
	run("qemu-img", "create", "-q", "-f", "qcow2", p("short.qcow2"), "256k")
	run("qemu-io", "-c", "write -P 6 0 64k", p("short.qcow2"))
	os.WriteFile(p("r1.raw"), bytes.Repeat([]byte{7}, 5*512), 0o644)
	os.WriteFile(p("r2.raw"), make([]byte, 128<<10), 0o644)
	mixed := append(append(bytes.Repeat([]byte{1}, 64<<10), make([]byte, 64<<10)...), bytes.Repeat([]byte{2}, 64<<10)...)
	mixed = append(append(append(mixed, make([]byte, 4096)...), bytes.Repeat([]byte{3}, 4096)...), make([]byte, 56<<10)...)
	os.WriteFile(p("mixed.raw"), mixed, 0o644)

	base, top := p("base.qcow2"), p("top.qcow2")
	for _, args := range [][]string{
		{"-O", "qcow2", "-B", base, "-F", "qcow2", top, "OUT"},
		{"-p", "-O", "qcow2", "-B", base, "-F", "qcow2", top, "OUT"},
		{"-O", "qcow2", "-o", "backing_file=" + base + ",backing_fmt=qcow2", top, "OUT"},
		{"-O", "qcow2", "-B", base, "-o", "backing_file=" + top + ",backing_fmt=qcow2", top, "OUT"},
		{"-O", "qcow2", "-B", base, "-F", "qcow2", p("top.raw"), "OUT"},
		{"-O", "qcow2", "-B", base, "-F", "qcow2", p("plain.qcow2"), "OUT"},
		{"-O", "qcow2", "-B", p("short.qcow2"), "-F", "qcow2", top, "OUT"},
		{"-c", "-O", "qcow2", "-B", base, "-F", "qcow2", top, "OUT"},
		{"-p", "-O", "qcow2", top, "OUT"},
		{"-p", "-O", "qcow2", p("mixed.raw"), "OUT"},
		{"-O", "qcow2", p("mixed.raw"), "OUT"},
		{"-p", "-O", "raw", p("r1.raw"), p("r2.raw"), p("plain.qcow2"), p("r1.raw"), "OUT"},
		{"-O", "qcow2", p("r1.raw"), top, p("mixed.raw"), "OUT"},
		{"-c", "-O", "qcow2", p("r1.raw"), p("mixed.raw"), "OUT"},
		{"-O", "raw", "-B", base, top, "OUT"},
		{"-O", "raw", "-F", "qcow2", top, "OUT"},
		{"-O", "raw", "-o", "backing_file=" + base, top, "OUT"},
		{"-O", "qcow2", "-o", "backing_fmt=raw", "-B", base, top, "OUT"},
		{"-O", "qcow2", "-B", base, top, "OUT"},
		{"-O", "qcow2", "-o", "backing_file=" + base, top, "OUT"},
		{"-O", "qcow2", "-F", "qcow2", top, "OUT"},
		{"-O", "qcow2", "-B", base, "-F", "qcow2", top, top, "OUT"},
		{"--target-is-zero", top, "OUT"},
		{"-p", "--target-is-zero", top, "OUT"},
		{top},
		{"-p", p("nonexistent"), "OUT"},
	} {
		os.Remove(p("m.out"))
		os.Remove(p("q.out"))
		ours, theirs := cvRunBoth(t, dir, args)
		if ours != theirs {
			t.Errorf("%q:\nours     %+v\nqemu-img %+v", args, ours, theirs)
			continue
		}
		if ours.code == 0 {
			cvSameImage(t, dir)
		}
	}
}

// TestConvertTargetIsZero: -n --target-is-zero writes no zeroes (the
// target's old data stays where the source reads zero), as qemu-img's.
func TestConvertTargetIsZero(t *testing.T) {
	t.Parallel()
	imgReadNeedQemu(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	src := append(bytes.Repeat([]byte{1}, 64<<10), make([]byte, 64<<10)...)
	os.WriteFile(p("src.raw"), src, 0o644)
	for _, n := range []string{"m.out", "q.out"} {
		os.WriteFile(p(n), bytes.Repeat([]byte{9}, 128<<10), 0o644)
	}
	ours, theirs := cvRunBoth(t, dir, []string{"-n", "--target-is-zero", "-f", "raw", "-O", "raw", p("src.raw"), "OUT"})
	if ours != theirs || ours.code != 0 {
		t.Fatalf("ours %+v, qemu-img %+v", ours, theirs)
	}
	m, _ := os.ReadFile(p("m.out"))
	q, _ := os.ReadFile(p("q.out"))
	if !bytes.Equal(m, q) || m[len(m)-1] != 9 {
		t.Errorf("targets differ, or zeroes were written")
	}
}

// TestConvertBackingBadInput: where qemu-img errs but exits 0 (-n
// --target-is-zero with -B) minivmm exits 1, and a backing file that
// does not open leaves no output image behind (qemu-img leaves one).
func TestConvertBackingBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	cvRawImage(t, p("src.raw"), 1<<20, map[int64]byte{0: 1})
	cvRawImage(t, p("dst.raw"), 1<<20, nil)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"convert", "-n", "--target-is-zero", "-B", p("src.raw"), p("src.raw"), p("dst.raw")},
			"qemu-img: Cannot use --target-is-zero when the destination image has a backing file\n"},
		{[]string{"convert", "-O", "qcow2", "-B", p("none"), "-F", "qcow2", p("src.raw"), p("new.qcow2")},
			"qemu-img: Could not open '" + p("new.qcow2") + "': Could not open backing file: Could not open '" +
				p("none") + "': No such file or directory\n"},
	} {
		code, out, errs := cvImg(tc.args...)
		if code != 1 || out != "" || errs != tc.want {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", tc.args, code, out, errs)
		}
	}
	if _, err := os.Stat(p("new.qcow2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("new.qcow2 left behind: %v", err)
	}
}
