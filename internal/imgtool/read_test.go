package imgtool

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// imgReadNeedQemu skips (or, under CI, fails) without qemu-img.
func imgReadNeedQemu(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img not installed; apt-get install qemu-utils")
		}
		t.Skip("qemu-img not installed; apt-get install qemu-utils")
	}
}

func imgReadRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

// imgReadImages makes the images the interop tests compare on, with
// qemu-img and qemu-io, and returns their directory.
func imgReadImages(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	p := func(n string) string { return filepath.Join(d, n) }
	imgReadRun(t, "qemu-img", "create", "-f", "raw", p("r.raw"), "1M")
	imgReadRun(t, "qemu-io", "-f", "raw", "-c", "write -P 1 4k 4k", p("r.raw"))
	imgReadRun(t, "qemu-img", "create", "-f", "raw", p("e.raw"), "0")
	imgReadRun(t, "qemu-img", "create", "-f", "qcow2", p("b.qcow2"), "1M")
	imgReadRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 1 0 64k", "-c", "write -z 128k 64k",
		"-c", "write -P 2 256k 64k", "-c", "discard 256k 64k", "-c", "write -P 4 768k 128k", p("b.qcow2"))
	imgReadRun(t, "qemu-img", "create", "-f", "qcow2", "-b", p("b.qcow2"), "-F", "qcow2", p("t.qcow2"), "2M")
	imgReadRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 5 64k 64k", "-c", "write -P 6 1536k 64k", p("t.qcow2"))
	imgReadRun(t, "qemu-img", "create", "-f", "qcow2", "-b", "t.qcow2", "-F", "qcow2", p("u.qcow2"), "2M")
	imgReadRun(t, "qemu-img", "create", "-f", "qcow2", p("c.qcow2"), "1M")
	imgReadRun(t, "qemu-io", "-f", "qcow2", "-c", "write -c -P 3 512k 64k", "-c", "write -P 3 0 64k", p("c.qcow2"))
	imgReadRun(t, "qemu-img", "create", "-f", "qcow2", "-o", "compat=0.10", p("v2.qcow2"), "1M")
	imgReadRun(t, "qemu-img", "create", "-f", "qcow2", "-o",
		"lazy_refcounts=on,compression_type=zstd,extended_l2=on,cluster_size=128k", p("z.qcow2"), "3M")
	imgReadRun(t, "qemu-img", "create", "-f", "raw", p("c1.raw"), "1M")
	imgReadRun(t, "qemu-io", "-f", "raw", "-c", "write -P 7 1000 3", p("c1.raw"))
	imgReadRun(t, "qemu-img", "create", "-f", "raw", p("c2.raw"), "2M")
	imgReadRun(t, "qemu-io", "-f", "raw", "-c", "write -P 7 1536k 1000", p("c2.raw"))
	imgReadRun(t, "qemu-img", "create", "-f", "raw", p("c3.raw"), "2M")
	imgReadRun(t, "qemu-img", "convert", "-O", "qcow2", p("c1.raw"), p("c1.qcow2"))
	imgReadRun(t, "qemu-img", "convert", "-c", "-O", "qcow2", p("b.qcow2"), p("bc.qcow2"))
	// Not a whole number of sectors: QEMU sees 1024 bytes, the tail zero.
	if err := os.WriteFile(p("odd.raw"), bytes.Repeat([]byte{9}, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestImgReadInterop runs each command with qemu-img and in-process,
// and wants the same stdout, stderr and exit status.
func TestImgReadInterop(t *testing.T) {
	t.Parallel()
	imgReadNeedQemu(t)
	d := imgReadImages(t)
	var cases [][]string
	for _, f := range []string{"r.raw", "e.raw", "odd.raw", "b.qcow2", "t.qcow2", "u.qcow2", "c.qcow2", "v2.qcow2", "z.qcow2", "nonexistent"} {
		for _, o := range []string{"human", "json"} {
			cases = append(cases,
				[]string{"info", "--output=" + o, f},
				[]string{"info", "--output=" + o, "--backing-chain", f},
				[]string{"map", "--output=" + o, f})
			cases = append(cases, []string{"map", "--output=" + o, "-f", "raw", f})
		}
	}
	cases = append(cases,
		[]string{"info", "-U", "--image-opts", "driver=qcow2,file.driver=file,file.filename=" + filepath.Join(d, "t.qcow2")},
		[]string{"info", "--output=xml", "r.raw"},
		[]string{"info"},
		[]string{"map", "a", "b"},
	)
	for _, pair := range [][2]string{{"c1.raw", "c2.raw"}, {"c2.raw", "c1.raw"}, {"c1.raw", "c3.raw"},
		{"c3.raw", "c1.raw"}, {"c3.raw", "c3.raw"}, {"c1.raw", "nonexistent"}, {"b.qcow2", "t.qcow2"},
		{"b.qcow2", "bc.qcow2"}, {"c1.raw", "c1.qcow2"}, {"r.raw", "b.qcow2"}, {"b.qcow2", "r.raw"},
		{"t.qcow2", "u.qcow2"}, {"c.qcow2", "c.qcow2"}} {
		cases = append(cases, []string{"compare", pair[0], pair[1]}, []string{"compare", "-s", pair[0], pair[1]})
	}
	cases = append(cases, []string{"compare", "-f", "qcow2", "-F", "raw", "c1.qcow2", "c1.raw"},
		[]string{"compare", "-q", "c1.raw", "c2.raw"}, []string{"compare", "c1.raw"})
	for _, args := range cases {
		args := append([]string(nil), args...)
		for i, a := range args {
			if strings.Contains(a, ".raw") || strings.Contains(a, ".qcow2") || a == "nonexistent" {
				if !strings.Contains(a, "=") {
					args[i] = filepath.Join(d, a)
				}
			}
		}
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			want, got := qemuImgRun(t, "", args...), ourImgRun(args...)
			if got != want {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nwant:\n%s\nstderr:\n%s\nwant:\n%s",
					got.code, want.code, got.out, want.out, got.err, want.err)
			}
		})
	}
}

// imgResult is what one run of qemu-img or minivmm img printed, and its
// exit status.
type imgResult struct {
	code     int
	out, err string
}

// qemuImgRun runs qemu-img in dir (or the test's own directory).
func qemuImgRun(t *testing.T, dir string, args ...string) imgResult {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command("qemu-img", args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &out, &errb
	r := imgResult{}
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		r.code = ee.ExitCode()
	}
	r.out, r.err = out.String(), errb.String()
	return r
}

// ourImgRun runs minivmm img in-process.
func ourImgRun(args ...string) imgResult {
	var out, errb bytes.Buffer
	code := runImg(args, &out, &errb)
	return imgResult{code, out.String(), errb.String()}
}

func TestImgReadSizeToStr(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		v    int64
		want string
	}{
		{0, "0 B"}, {512, "512 B"}, {1000, "0.977 KiB"}, {1024, "1 KiB"}, {335872, "328 KiB"},
		{1536 << 10, "1.5 MiB"}, {1 << 20, "1 MiB"}, {10 << 30, "10 GiB"}, {1023 << 20, "0.999 GiB"},
	} {
		if got := sizeToStr(c.v); got != c.want {
			t.Errorf("sizeToStr(%d) = %q, want %q", c.v, got, c.want)
		}
	}
}

func TestImgReadQDictOrder(t *testing.T) {
	t.Parallel()
	d := &qdict{}
	for _, k := range []string{"filename", "format", "dirty-flag", "actual-size", "virtual-size", "cluster-size"} {
		d.put(k, int64(0))
	}
	var got []string
	for _, i := range d.order() {
		got = append(got, d.keys[i])
	}
	want := "virtual-size filename cluster-size format actual-size dirty-flag"
	if strings.Join(got, " ") != want {
		t.Errorf("order %q, want %q", strings.Join(got, " "), want)
	}
}
