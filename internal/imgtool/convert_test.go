package imgtool

// Tests for img convert, img bench and img resize, against qemu-img.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
)

// cvWriteUnsupported is the qcow2 driver's refusal to open read-write
// before its write path exists; only this error makes the qcow2-output
// tests skip.
const cvWriteUnsupported = "cannot be opened read-write by minivmm yet"

func cvImg(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := runImg(args, &out, &errb)
	return code, out.String(), errb.String()
}

func cvMust(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := cvImg(args...)
	if code != 0 {
		t.Fatalf("minivmm img %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func cvQemu(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func cvIdentical(t *testing.T, a, b string) {
	t.Helper()
	out := cvQemu(t, "qemu-img", "compare", a, b)
	if !strings.Contains(out, "Images are identical.") {
		t.Fatalf("qemu-img compare %s %s: %s", a, b, out)
	}
}

// cvQcow2Out converts and skips (only) when qcow2 cannot be written yet.
func cvQcow2Out(t *testing.T, args ...string) {
	t.Helper()
	code, out, errs := cvImg(args...)
	if code != 0 && strings.Contains(errs, cvWriteUnsupported) {
		t.Skipf("qcow2 output needs the qcow2 write path: %s", strings.TrimSpace(errs))
	}
	if code != 0 {
		t.Fatalf("minivmm img %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
}

func cvRawImage(t *testing.T, path string, size int64, data map[int64]byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, b := range data {
		if _, err := f.WriteAt(bytes.Repeat([]byte{b}, 65536), off); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConvertRawToRaw(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.raw"), filepath.Join(dir, "dst.raw")
	cvRawImage(t, src, 8<<20, map[int64]byte{0: 0x11, 3 << 20: 0x22, 8<<20 - 65536: 0x33})
	for _, extra := range [][]string{nil, {"-m", "1"}, {"-m", "16", "-W"}, {"-t", "writethrough", "-T", "none"}} {
		args := append([]string{"convert", "-q", "-f", "raw", "-O", "raw"}, extra...)
		cvMust(t, append(args, src, dst)...)
		a, _ := os.ReadFile(src)
		b, _ := os.ReadFile(dst)
		if !bytes.Equal(a, b) {
			t.Fatalf("%v: contents differ", extra)
		}
		cvIdentical(t, src, dst)
	}
}

// cvChain builds base.qcow2 (compressed clusters) <- top.qcow2 and
// returns top's path.
func cvChain(t *testing.T, dir string) string {
	t.Helper()
	plain := filepath.Join(dir, "plain.qcow2")
	base := filepath.Join(dir, "base.qcow2")
	top := filepath.Join(dir, "top.qcow2")
	cvQemu(t, "qemu-img", "create", "-q", "-f", "qcow2", plain, "16M")
	cvQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 5M 192k", plain)
	cvQemu(t, "qemu-img", "convert", "-c", "-f", "qcow2", "-O", "qcow2", plain, base)
	cvQemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
	cvQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x33 512k 1M", "-c", "write -z 5M 64k",
		"-c", "write -P 0x44 15M 1M", top)
	return top
}

func TestConvertQcow2ChainToRaw(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	top := cvChain(t, dir)
	dst := filepath.Join(dir, "out.raw")
	for _, extra := range [][]string{{"-p"}, {"-m", "4", "-W"}} {
		args := append([]string{"convert", "-f", "qcow2", "-O", "raw"}, extra...)
		out := cvMust(t, append(args, top, dst)...)
		if extra[0] == "-p" {
			if !strings.HasPrefix(out, "    (0.00/100%)\r") || !strings.HasSuffix(out, "    (100.00/100%)\r\n") {
				t.Errorf("progress %q, want qemu-img's \"    (0.00/100%%)\\r...    (100.00/100%%)\\r\\n\"", out)
			}
		}
		cvIdentical(t, top, dst)
	}
	// -n into an existing, non-zero image: zero extents must be written.
	cvRawImage(t, dst, 16<<20, map[int64]byte{5 << 20: 0xee, 10 << 20: 0xee})
	cvMust(t, "convert", "-n", "-f", "qcow2", "-O", "raw", top, dst)
	cvIdentical(t, top, dst)
}

func TestConvertToQcow2(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	cvRawImage(t, src, 8<<20, map[int64]byte{0: 0x11, 3 << 20: 0x22})
	dst := filepath.Join(dir, "dst.qcow2")
	cvQcow2Out(t, "convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", src, dst)
	cvIdentical(t, src, dst)
	cvQemu(t, "qemu-img", "check", dst)
	top := cvChain(t, dir)
	dst2 := filepath.Join(dir, "dst2.qcow2")
	cvQcow2Out(t, "convert", "-m", "8", "-W", "-f", "qcow2", "-O", "qcow2", top, dst2)
	cvIdentical(t, top, dst2)
	cvQemu(t, "qemu-img", "check", dst2)
}

func cvAllocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestConvertSparse(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	cvRawImage(t, src, 1<<30, map[int64]byte{0: 0x11, 700 << 20: 0x22})
	// An allocated but all-zero region is not copied either.
	f, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 1<<20), 100<<20)
	f.Close()
	dst := filepath.Join(dir, "dst.raw")
	cvMust(t, "convert", "-f", "raw", "-O", "raw", src, dst)
	if got := cvAllocated(t, dst); got > 1<<20 {
		t.Errorf("raw destination has %d bytes allocated, want at most 1 MiB (two 64 KiB extents)", got)
	}
	cvIdentical(t, src, dst)
	dq := filepath.Join(dir, "dst.qcow2")
	cvQcow2Out(t, "convert", "-f", "raw", "-O", "qcow2", src, dq)
	if got := cvAllocated(t, dq); got > 2<<20 {
		t.Errorf("qcow2 destination has %d bytes allocated, want at most 2 MiB", got)
	}
	cvQemu(t, "qemu-img", "check", dq)
	cvIdentical(t, src, dq)
}

func TestConvertErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	cvRawImage(t, src, 1<<20, nil)
	small := filepath.Join(dir, "small.raw")
	cvRawImage(t, small, 4096, nil)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"convert", "-c", "-O", "raw", src, filepath.Join(dir, "x")}, "qemu-img: Compression not supported for this file format\n"},
		{[]string{"convert", "-f", "raw", filepath.Join(dir, "none"), filepath.Join(dir, "x")}, "Could not open"},
		{[]string{"convert", "-n", "-f", "raw", "-O", "raw", src, small}, "qemu-img: output file is smaller than input file\n"},
		{[]string{"convert", "-m", "0", src, filepath.Join(dir, "x")}, "Invalid number of coroutines"},
		{[]string{"convert", src}, "qemu-img: Must specify image file name\n"},
		{[]string{"convert", "-f", "raw", "-O", "foo", src, filepath.Join(dir, "x")}, "qemu-img: Unknown file format 'foo'\n"},
		{[]string{"convert", "-f", "raw", "-O", "raw", "-o", "bogus=1", src, filepath.Join(dir, "x")}, "qemu-img: Invalid parameter 'bogus'\n"},
		{[]string{"convert", "-n", "-o", "preallocation=off", "-f", "raw", "-O", "raw", src, small}, "qemu-img: -o has no effect when skipping image creation\n"},
		{[]string{"convert", "-t", "foo", src, filepath.Join(dir, "x")}, "qemu-img: Invalid cache option: foo\n"},
		{[]string{"convert", "-T", "foo", src, filepath.Join(dir, "x")}, "qemu-img: Invalid source cache option: foo\n"},
	} {
		code, _, errs := cvImg(c.args...)
		if code != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 1 and %q", c.args, code, errs, c.want)
		}
	}
}

var cvSeconds = regexp.MustCompile(`Run completed in [0-9]+\.[0-9]{3} seconds\.`)

func TestBenchOutput(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "b.raw")
	cvRawImage(t, img, 1<<20, nil)
	for _, args := range [][]string{
		{"-f", "raw", "-c", "1000"},
		{"-f", "raw", "-c", "300", "-d", "1", "-o", "4096", "-S", "8192", "-s", "512"},
		{"-f", "raw", "-c", "100", "-d", "7", "-w", "--pattern=0x5a", "-t", "none"},
		{"-f", "raw", "-c", "50", "-d", "2", "-n", "-t", "directsync", "-s", "8k"},
	} {
		want := cvQemu(t, "qemu-img", append(append([]string{"bench"}, args...), img)...)
		got := cvMust(t, append(append([]string{"bench"}, args...), img)...)
		norm := func(s string) string { return cvSeconds.ReplaceAllString(s, "Run completed in N seconds.") }
		if norm(got) != norm(want) || !cvSeconds.MatchString(got) {
			t.Errorf("bench %v:\n got %q\nwant %q", args, got, want)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-c", "x"}, "qemu-img: Invalid request count specified\n"},
		{[]string{"-d", "0"}, "qemu-img: Invalid queue depth specified\n"},
		{[]string{"--pattern=300"}, "qemu-img: Invalid pattern byte specified\n"},
		{[]string{"-t", "foo"}, "qemu-img: Invalid cache mode\n"},
		{[]string{"-c", "5", "-o", "1M"}, "qemu-img: Failed request: Input/output error\n"},
		{[]string{"-n"}, "qemu-img: Could not open '" + img + "': aio=native was specified, but it requires cache.direct=on, which was not specified.\n"},
	} {
		code, _, errs := cvImg(append(append([]string{"bench"}, c.args...), img)...)
		if code != 1 || errs != c.want {
			t.Errorf("bench %v: exit %d, stderr %q; want 1, %q", c.args, code, errs, c.want)
		}
	}
}

func TestBenchWritesPattern(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "b.raw")
	cvRawImage(t, img, 64<<10, nil)
	// 20 requests of 4 KiB every 8 KiB from 4 KiB wrap around the 64 KiB
	// image: every odd 4 KiB block is written, the even ones not.
	cvMust(t, "bench", "-q", "-f", "raw", "-w", "--pattern=0xab", "-c", "20", "-d", "3",
		"-o", "4k", "-S", "8k", img)
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	for blk := 0; blk < 16; blk++ {
		want := byte(0)
		if blk%2 == 1 {
			want = 0xab
		}
		if !bytes.Equal(data[blk*4096:(blk+1)*4096], bytes.Repeat([]byte{want}, 4096)) {
			t.Errorf("block %d: want all %#x", blk, want)
		}
	}
	// Default pattern: zeroes, as qemu-img's.
	cvMust(t, "bench", "-q", "-f", "raw", "-w", "-c", "1", "-o", "4k", img)
	data, _ = os.ReadFile(img)
	if !bytes.Equal(data[4096:8192], make([]byte, 4096)) {
		t.Error("default pattern: want zeroes")
	}
}

// TestBenchAllocations checks that requests do not allocate: 20000 more
// requests cost (almost) no more allocations.
func TestBenchAllocations(t *testing.T) {
	fdtest.Check(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "b.raw")
	cvRawImage(t, img, 1<<20, map[int64]byte{0: 1})
	mallocs := func(count string) uint64 {
		var a, b runtime.MemStats
		runtime.ReadMemStats(&a)
		cvMust(t, "bench", "-q", "-f", "raw", "-d", "4", "-c", count, img)
		runtime.ReadMemStats(&b)
		return b.Mallocs - a.Mallocs
	}
	mallocs("10")
	small, large := mallocs("10"), mallocs("20010")
	if large > small+200 {
		t.Errorf("20000 more requests made %d more allocations", large-small)
	}
}

func TestResizeRaw(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "r.raw")
	cvRawImage(t, img, 1<<20, map[int64]byte{0: 0x11})
	size := func() int64 {
		fi, err := os.Stat(img)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	if out := cvMust(t, "resize", "-f", "raw", img, "2M"); out != "Image resized.\n" {
		t.Errorf("output %q", out)
	}
	cvMust(t, "resize", "-f", "raw", img, "+1M")
	if size() != 3<<20 {
		t.Fatalf("size %d, want 3 MiB", size())
	}
	// Shrinking without --shrink: qemu-img's refusal, word for word.
	cp := filepath.Join(dir, "q.raw")
	cvRawImage(t, cp, 3<<20, nil)
	want, _ := exec.Command("qemu-img", "resize", "-f", "raw", cp, "-1M").CombinedOutput()
	code, out, errs := cvImg("resize", "-f", "raw", img, "-1M")
	if code != 1 || out != "" || errs != string(want) {
		t.Errorf("shrink without --shrink: exit %d, %q %q; want 1, %q", code, out, errs, want)
	}
	if out := cvMust(t, "resize", "-q", "--shrink", "-f", "raw", img, "-1M"); out != "" {
		t.Errorf("-q printed %q", out)
	}
	if size() != 2<<20 {
		t.Fatalf("size %d, want 2 MiB", size())
	}
	data, _ := os.ReadFile(img)
	if data[0] != 0x11 || data[65535] != 0x11 || data[65536] != 0 {
		t.Error("data lost")
	}
	code, _, errs = cvImg("resize", img, "abc")
	if code != 1 || !strings.Contains(errs, "Parameter 'size' expects a non-negative number below 2^64") {
		t.Errorf("bad size: exit %d, %q", code, errs)
	}
}

func TestResizeQcow2(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "r.qcow2")
	cvQemu(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
	cvQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64k", img)
	code, out, errs := cvImg("resize", "-f", "qcow2", img, "+3M")
	if code != 0 && strings.Contains(errs, cvWriteUnsupported) {
		t.Skipf("qcow2 resize needs the qcow2 write path: %s", strings.TrimSpace(errs))
	}
	if code != 0 || out != "Image resized.\n" {
		t.Fatalf("resize: exit %d, %q %q", code, out, errs)
	}
	if vs := icInfo(t, img)["virtual-size"]; vs != float64(4<<20) {
		t.Errorf("virtual-size %v, want 4 MiB", vs)
	}
	cvQemu(t, "qemu-img", "check", img)
	cvQemu(t, "qemu-io", "-f", "qcow2", "-c", "read -P 0x11 0 64k", "-c", "read -P 0 1M 3M", img)
	// Probed: qcow2 found, no raw warning.
	code, _, errs = cvImg("resize", img, "5M")
	if code != 0 || errs != "" {
		t.Errorf("probed resize: exit %d, %q", code, errs)
	}
}

// TestConvertBenchResizeFdsets runs convert, compare, bench and resize
// over -add-fd fd sets only.
func TestConvertBenchResizeFdsets(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.raw"), filepath.Join(dir, "dst.qcow2")
	cvRawImage(t, src, 4<<20, map[int64]byte{1 << 20: 0x77})
	if err := os.WriteFile(dst, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	open := func(p string, flags int) string {
		fd, err := unix.Open(p, flags, 0)
		if err != nil {
			t.Fatal(err)
		}
		return strconv.Itoa(fd)
	}
	// addFds takes each fd over and closes it.
	code, out, errs := cvImg("convert", "-f", "raw", "-O", "qcow2",
		"-add-fd", "fd="+open(src, unix.O_RDONLY)+",set=1", "-add-fd", "fd="+open(dst, unix.O_RDWR)+",set=2",
		"/dev/fdset/1", "/dev/fdset/2")
	if code != 0 && strings.Contains(errs, cvWriteUnsupported) {
		t.Skipf("qcow2 output needs the qcow2 write path: %s", strings.TrimSpace(errs))
	}
	if code != 0 {
		t.Fatalf("convert: exit %d %q %q", code, out, errs)
	}
	cvIdentical(t, src, dst)
	cvQemu(t, "qemu-img", "check", dst)
	// compare opens both images over the same -add-fd sets.
	cvMust(t, "compare", "-f", "raw", "-F", "qcow2", "-add-fd", "fd="+open(src, unix.O_RDONLY)+",set=6",
		"-add-fd", "fd="+open(dst, unix.O_RDONLY)+",set=7", "/dev/fdset/6", "/dev/fdset/7")
	cvMust(t, "bench", "-f", "qcow2", "-w", "--pattern=9", "-c", "4", "-add-fd", "fd="+open(dst, unix.O_RDWR)+",set=4", "/dev/fdset/4")
	cvQemu(t, "qemu-io", "-f", "qcow2", "-c", "read -P 9 0 16k", dst)
	cvMust(t, "resize", "-f", "qcow2", "-add-fd", "fd="+open(dst, unix.O_RDWR)+",set=5", "/dev/fdset/5", "8M")
	if vs := icInfo(t, dst)["virtual-size"]; vs != float64(8<<20) {
		t.Errorf("virtual-size %v, want 8 MiB", vs)
	}
}
