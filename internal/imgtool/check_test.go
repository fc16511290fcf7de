package imgtool

import (
	"bytes"
	encbin "encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// needQemuCheck skips without qemu-img and qemu-io, except under CI=true.
func needQemuCheck(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (CI=true)", tool)
			}
			t.Skip("qemu-img not installed; apt-get install qemu-utils")
		}
	}
}

func runTool(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || bytes.Contains(out, []byte("failed")) {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// qemuCheck runs qemu-img check --output=json: its JSON and exit status.
func qemuCheck(t *testing.T, dir, img string) (map[string]any, int, string) {
	t.Helper()
	cmd := exec.Command("qemu-img", "check", "--output=json", img)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if out.Len() > 0 {
		if err := json.Unmarshal(out.Bytes(), &m); err != nil {
			t.Fatalf("qemu-img check: %v\n%s", err, out.String())
		}
	}
	return m, code, errb.String()
}

// ourCheck runs minivmm img check --output=json in-process on dir/img.
func ourCheck(t *testing.T, dir, img string) (map[string]any, int, string, string) {
	t.Helper()
	out, errs, code := imgIn(t, dir, "check", "--output=json", img)
	var m map[string]any
	if out != "" {
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("minivmm img check: %v\n%s", err, out)
		}
	}
	return m, code, out, errs
}

// compareCheck checks that both tools agree on dir/img, and returns the
// exit status.
func compareCheck(t *testing.T, dir, img string) int {
	t.Helper()
	want, wantCode, wantErr := qemuCheck(t, dir, img)
	got, gotCode, gotOut, gotErr := ourCheck(t, dir, img)
	if gotCode != wantCode || !reflect.DeepEqual(got, want) {
		t.Errorf("%s: minivmm exit %d %v\nqemu-img exit %d %v\nminivmm stderr:\n%s\nqemu-img stderr:\n%s", img, gotCode, got, wantCode, want, gotErr, wantErr)
	}
	if gotErr != wantErr {
		t.Errorf("%s: stderr differs:\nminivmm:\n%s\nqemu-img:\n%s", img, gotErr, wantErr)
	}
	// The exact bytes, key order included.
	cmd := exec.Command("qemu-img", "check", "--output=json", img)
	cmd.Dir = dir
	qout, _ := cmd.Output()
	if string(qout) != gotOut {
		t.Errorf("%s: JSON text differs:\nminivmm:\n%s\nqemu-img:\n%s", img, gotOut, qout)
	}
	return gotCode
}

func TestImgCheckInterop(t *testing.T) {
	needQemuCheck(t)
	t.Parallel()
	dir := t.TempDir()
	writes := []string{"write -P 1 0 64k", "write -P 2 1M 4k", "write -P 3 3M 128k", "write -z 2M 64k", "write -P 4 100k 8k"}
	cases := []struct {
		name, opts string
		extra      []string
		compress   bool
		snapshot   bool
		dirty      bool
	}{
		{name: "c64k", opts: "cluster_size=64k"},
		{name: "c512", opts: "cluster_size=512"},
		{name: "c4k-r1", opts: "cluster_size=4k,refcount_bits=1"},
		{name: "c4k-r2", opts: "cluster_size=4k,refcount_bits=2"},
		{name: "c4k-r4", opts: "cluster_size=4k,refcount_bits=4"},
		{name: "c4k-r8", opts: "cluster_size=4k,refcount_bits=8", snapshot: true},
		{name: "c64k-r32", opts: "refcount_bits=32", snapshot: true},
		{name: "c64k-r64", opts: "refcount_bits=64", snapshot: true, compress: true},
		{name: "c2M", opts: "cluster_size=2M"},
		{name: "compressed", opts: "cluster_size=4k", compress: true},
		{name: "snapshots", opts: "cluster_size=64k", snapshot: true, compress: true},
		{name: "extl2", opts: "extended_l2=on,cluster_size=128k", snapshot: true},
		{name: "zstd", opts: "compression_type=zstd", compress: true},
		{name: "v2", opts: "compat=0.10", snapshot: true},
		{name: "dirty", opts: "lazy_refcounts=on", dirty: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.name + ".qcow2"
			runTool(t, dir, "qemu-img", "create", "-f", "qcow2", "-o", tc.opts, img, "8M")
			args := []string{}
			for _, w := range writes {
				args = append(args, "-c", w)
			}
			if tc.compress {
				args = append(args, "-c", "write -c -P 5 4M 64k")
			}
			runTool(t, dir, "qemu-io", append(args, img)...)
			if tc.snapshot {
				runTool(t, dir, "qemu-img", "snapshot", "-c", "s1", img)
				runTool(t, dir, "qemu-io", "-c", "write -P 7 0 16k", "-c", "write -P 8 6M 64k", img)
				runTool(t, dir, "qemu-img", "snapshot", "-c", "s2", img)
				runTool(t, dir, "qemu-io", "-c", "write -P 9 32k 4k", img)
			}
			if tc.dirty {
				cmd := exec.Command("qemu-io", "-c", "write -P 10 7M 128k", "-c", "abort", img)
				cmd.Dir = dir
				cmd.Run() // it aborts
			}
			compareCheck(t, dir, img)
		})
	}
}

// be16/64 helpers over a file.
func patch(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func peek64(t *testing.T, path string, off int64) uint64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return encbin.BigEndian.Uint64(data[off:])
}

func be16(v uint16) []byte { return encbin.BigEndian.AppendUint16(nil, v) }
func be64(v uint64) []byte { return encbin.BigEndian.AppendUint64(nil, v) }

func TestImgCheckCorrupted(t *testing.T) {
	needQemuCheck(t)
	t.Parallel()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	runTool(t, dir, "qemu-img", "create", "-f", "qcow2", base, "8M")
	runTool(t, dir, "qemu-io", "-c", "write -P 1 0 128k", "-c", "write -c -P 2 1M 64k", base)
	data, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	rb := int64(peek64(t, base, int64(peek64(t, base, 48))))
	l2 := int64(peek64(t, base, int64(peek64(t, base, 40))) &^ (1 << 63))
	data0 := int64(peek64(t, base, l2)) & 0x00fffffffffffe00
	cases := []struct {
		name   string
		grow   int64
		mutate func(p string)
		code   int
	}{
		{"clean", 0, func(string) {}, 0},
		{"leak", 1 << 20, func(p string) { patch(t, p, rb+2*12, be16(1)) }, 3},
		{"leak-refcount-2", 0, func(p string) { patch(t, p, rb+2*(data0>>16), be16(2)) }, 2},
		{"zero-refcount", 0, func(p string) { patch(t, p, rb+2*(data0>>16), be16(0)) }, 2},
		{"clear-copied", 0, func(p string) { patch(t, p, l2, be64(uint64(data0))) }, 2},
		{"set-copied-l1", 0, func(p string) {
			l1 := int64(peek64(t, p, 40))
			patch(t, p, l1, be64(uint64(l2)))
		}, 2},
		{"past-end", 0, func(p string) { patch(t, p, l2+8*5, be64(1<<63|1<<30)) }, 2},
		{"unaligned", 0, func(p string) { patch(t, p, l2+8*6, be64(1<<63|0x30200)) }, 2},
		{"l2-past-end", 0, func(p string) {
			l1 := int64(peek64(t, p, 40))
			patch(t, p, l1+8*3, be64(1<<63|1<<28))
		}, -1},
		{"refblock-refcount", 0, func(p string) { patch(t, p, rb+2*(rb>>16), be16(3)) }, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.name + ".qcow2"
			p := filepath.Join(dir, img)
			b := append([]byte(nil), data...)
			b = append(b, make([]byte, tc.grow)...)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			tc.mutate(p)
			if code := compareCheck(t, dir, img); code != tc.code && tc.code >= 0 {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
		})
	}
}

func TestImgCheckHumanAndErrors(t *testing.T) {
	needQemuCheck(t)
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "h.qcow2")
	runTool(t, dir, "qemu-img", "create", "-f", "qcow2", img, "8M")
	runTool(t, dir, "qemu-io", "-c", "write -P 1 0 128k", "-c", "write -c -P 2 1M 64k", img)
	for _, args := range [][]string{{img}, {"-q", img}, {"-f", "qcow2", img}} {
		var out, errb bytes.Buffer
		code := runImg(append([]string{"check"}, args...), &out, &errb)
		want, err := exec.Command("qemu-img", append([]string{"check"}, args...)...).Output()
		if err != nil {
			t.Fatal(err)
		}
		if code != 0 || out.String() != string(want) {
			t.Errorf("%v: exit %d\n%s\nwant\n%s", args, code, out.String(), want)
		}
	}
	raw := filepath.Join(dir, "r.img")
	os.WriteFile(raw, make([]byte, 4096), 0o644)
	var out, errb bytes.Buffer
	if code := runImg([]string{"check", raw}, &out, &errb); code != 63 || errb.String() != "qemu-img: This image format does not support checks\n" {
		t.Errorf("raw: exit %d, %q", code, errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := runImg([]string{"check", "-r", "some", img}, &out, &errb); code != 1 || errb.String() != "qemu-img: Unknown option for -r (expecting 'leaks' or 'all'): some\n" {
		t.Errorf("-r some: exit %d, %q", code, errb.String())
	}
}

func TestImgCheckAddFd(t *testing.T) {
	needQemuCheck(t)
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "fd.qcow2")
	runTool(t, dir, "qemu-img", "create", "-f", "qcow2", img, "8M")
	fd := rawFd(t, img, unix.O_RDONLY) // taken over (and closed) by -add-fd
	var out, errb bytes.Buffer
	code := runImg([]string{"check", "-add-fd", "fd=" + strconv.Itoa(fd) + ",set=7", "/dev/fdset/7"}, &out, &errb)
	if code != 0 || !strings.Contains(out.String(), "No errors were found on the image.") {
		t.Errorf("exit %d\n%s%s", code, out.String(), errb.String())
	}
}

// runRepair runs a check -r in dir: qemu-img's or ours (in-process).
func runRepair(t *testing.T, dir string, ours bool, args ...string) (string, string, int) {
	t.Helper()
	if ours {
		return imgIn(t, dir, append([]string{"check"}, args...)...)
	}
	var out, errb bytes.Buffer
	cmd := exec.Command("qemu-img", append([]string{"check"}, args...)...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestImgCheckRepairInterop repairs copies of hand-corrupted images with
// qemu-img check -r and minivmm img check -r: same output and exit
// status, an image qemu-img finds clean (where it can be fixed) and with
// the content it had.
func TestImgCheckRepairInterop(t *testing.T) {
	needQemuCheck(t)
	t.Parallel()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	runTool(t, dir, "qemu-img", "create", "-f", "qcow2", base, "8M")
	runTool(t, dir, "qemu-io", "-c", "write -P 1 0 128k", "-c", "write -c -P 2 1M 64k", base)
	data, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	rb := int64(peek64(t, base, int64(peek64(t, base, 48))))
	l1 := int64(peek64(t, base, 40))
	l2 := int64(peek64(t, base, l1) &^ (1 << 63))
	data0 := int64(peek64(t, base, l2)) & 0x00fffffffffffe00
	corruptBit := func(p string) { patch(t, p, 72, be64(peek64(t, p, 72)|2)) }
	cases := []struct {
		name   string
		grow   int64
		mutate func(p string)
		// clean: the repaired image checks clean; sameBytes: ours is
		// byte for byte qemu-img's (and so is the output).
		clean, sameBytes map[string]bool
		// better: QEMU's repair fails where minivmm's succeeds.
		better bool
	}{
		{"leak", 1 << 20, func(p string) { patch(t, p, rb+2*12, be16(1)) }, repairBoth, repairBoth, false},
		{"leak-refcount-2", 0, func(p string) { patch(t, p, rb+2*(data0>>16), be16(2)) }, repairBoth, repairBoth, false},
		{"leak-corrupt-bit", 1 << 20, func(p string) { patch(t, p, rb+2*12, be16(1)); corruptBit(p) }, repairBoth, repairBoth, false},
		// Broken beyond repair in place: -r all rebuilds the refcount
		// structure, -r leaks refuses (as QEMU).
		{"zero-refcount", 0, func(p string) { patch(t, p, rb+2*(data0>>16), be16(0)) }, repairAll, repairBoth, false},
		// QEMU's rebuild fails here (it refuses to write the new
		// refcount block where the broken table claims one, and leaves
		// the image marked corrupt); minivmm's repairs the image.
		{"reftable-unaligned", 0, func(p string) { patch(t, p, int64(peek64(t, p, 48)), be64(uint64(rb)|0x2a00)) }, repairAll, repairLeaks, true},
		{"reftable-reserved", 0, func(p string) { patch(t, p, int64(peek64(t, p, 48)), be64(uint64(rb)|1)) }, repairAll, repairLeaks, true},
		{"reftable-zero", 0, func(p string) { patch(t, p, int64(peek64(t, p, 48)), be64(0)) }, repairAll, repairBoth, false},
		{"refblock-shared", 0, func(p string) { patch(t, p, int64(peek64(t, p, 48))+8, be64(uint64(rb))) }, repairAll, repairBoth, false},
		{"refblock-past-end", 0, func(p string) { patch(t, p, int64(peek64(t, p, 48))+8, be64(64<<20)) }, repairAll, repairBoth, false},
		{"clear-copied", 0, func(p string) { patch(t, p, l2, be64(uint64(data0))) }, repairBoth, repairBoth, false},
		{"set-copied-l1", 0, func(p string) { patch(t, p, l1, be64(uint64(l2))) }, repairBoth, repairBoth, false},
		{"past-end", 0, func(p string) { patch(t, p, l2+8*5, be64(1<<63|1<<30)) }, nil, repairBoth, false},
		{"unaligned", 0, func(p string) { patch(t, p, l2+8*6, be64(1<<63|0x30200)) }, nil, repairBoth, false},
		{"refblock-refcount", 0, func(p string) { patch(t, p, rb+2*(rb>>16), be16(3)) }, repairBoth, repairBoth, false},
	}
	for _, tc := range cases {
		for _, mode := range []string{"leaks", "all"} {
			for _, output := range []string{"human", "json"} {
				t.Run(tc.name+"-"+mode+"-"+output, func(t *testing.T) {
					b := append(append([]byte(nil), data...), make([]byte, tc.grow)...)
					orig, q, m := tc.name+".qcow2", "q-"+tc.name+".qcow2", "m-"+tc.name+".qcow2"
					for _, n := range []string{orig, q, m} {
						if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
							t.Fatal(err)
						}
						tc.mutate(filepath.Join(dir, n))
					}
					qout, qerr, qcode := runRepair(t, dir, false, "--output="+output, "-r", mode, q)
					mout, merr, mcode := runRepair(t, dir, true, "--output="+output, "-r", mode, m)
					if tc.sameBytes[mode] {
						qout = strings.ReplaceAll(qout, q, m)
						if mout != qout || merr != qerr || mcode != qcode {
							t.Errorf("exit %d, want %d\nstdout:\n%s\nwant:\n%s\nstderr:\n%s\nwant:\n%s", mcode, qcode, mout, qout, merr, qerr)
						}
						qb, _ := os.ReadFile(filepath.Join(dir, q))
						mb, _ := os.ReadFile(filepath.Join(dir, m))
						if !bytes.Equal(qb, mb) {
							t.Errorf("the repaired images differ")
						}
					} else if mcode != qcode && !(tc.better && mcode == 0) {
						t.Errorf("exit %d, want %d\n%s%s", mcode, qcode, mout, merr)
					}
					if tc.clean[mode] {
						if _, code, e := qemuCheck(t, dir, m); code != 0 {
							t.Errorf("qemu-img check after repair: exit %d\n%s", code, e)
						}
						if out, err := exec.Command("qemu-img", "compare", "-q", filepath.Join(dir, orig), filepath.Join(dir, m)).CombinedOutput(); err != nil {
							t.Errorf("qemu-img compare: %v\n%s", err, out)
						}
					}
				})
			}
		}
	}
}

var (
	repairBoth  = map[string]bool{"leaks": true, "all": true}
	repairAll   = map[string]bool{"all": true}
	repairLeaks = map[string]bool{"leaks": true}
)
