package imgtool

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
)

// dfQemu runs a QEMU tool, returning its combined output and exit code.
func dfQemu(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// dfImg runs minivmm img (as qemu-img), combined output and exit code.
func dfImg(args ...string) (string, int) {
	var out bytes.Buffer
	code := runImg(args, &out, &out)
	return out.String(), code
}

// dfIo runs minivmm io (as qemu-io), combined output and exit code.
func dfIo(args ...string) (string, int) {
	out, errs, code := ioRun(args, "")
	return out + errs, code
}

// dfQuiet drops qemu-io's timing lines.
func dfQuiet(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, "ops/sec") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// TestDataFileInterop: qcow2 images with an external data file (raw or
// not, with and without subclusters), made by qemu-img 7.2 or by
// minivmm, written by both tools and read by the other, are the same
// images: the same bytes at create, the same guest data, map, check and
// info output, and qemu-img check finds them clean.
func TestDataFileInterop(t *testing.T) {
	crNeedQemu(t)
	fdtest.Check(t)
	writes := []string{
		"write -P 0x11 0 4k", // cluster 0: host offset 0 in the data file
		"write -P 0x22 100k 8k",
		"write -P 0x33 192k 128k",
		"write -z 256k 64k",
		"write -z -u 200k 4k",
		"discard 1M 64k",
		"write -P 0x44 1020k 8k",
	}
	reads := []string{
		"read -P 0x11 0 4k", "read -P 0 4k 60k", "read -P 0x22 100k 8k", "read -P 0x33 192k 8k",
		"read -P 0 200k 4k", "read -P 0x33 204k 52k", "read -P 0 256k 64k", "read -P 0x44 1020k 8k",
	}
	for _, opts := range []string{"", ",data_file_raw=on", ",extended_l2=on", ",data_file_raw=on,extended_l2=on", ",preallocation=metadata", ",cluster_size=4k"} {
		t.Run(strings.NewReplacer(",", " ", "=", "-").Replace(strings.TrimPrefix(opts, ",")), func(t *testing.T) {
			dir := t.TempDir()
			q, m := filepath.Join(dir, "q.qcow2"), filepath.Join(dir, "m.qcow2")
			qd, md := filepath.Join(dir, "q.data"), filepath.Join(dir, "m.data")
			if out, code := dfQemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+qd+opts, q, "2M"); code != 0 {
				t.Fatal(out)
			}
			if out, code := dfImg("create", "-q", "-f", "qcow2", "-o", "data_file="+md+opts, m, "2M"); code != 0 {
				t.Fatal(out)
			}
			// The same bytes but for the data file's name.
			qb, _ := os.ReadFile(q)
			mb, _ := os.ReadFile(m)
			if !bytes.Equal(qb, bytes.ReplaceAll(mb, []byte(md), []byte(qd))) {
				t.Errorf("minivmm's image differs from qemu-img's")
			}
			if st, err := os.Stat(md); err != nil || st.Size() != 2<<20 {
				t.Errorf("data file: %v, %v", st, err)
			}
			// Each tool writes the other's image; both read both.
			for _, w := range writes {
				if out, code := dfIo("-f", "qcow2", "-c", w, q); code != 0 || strings.Contains(out, "failed") {
					t.Fatalf("minivmm io %s: %s", w, out)
				}
				if out, code := dfQemu(t, "qemu-io", "-f", "qcow2", "-c", w, m); code != 0 || strings.Contains(out, "failed") {
					t.Fatalf("qemu-io %s: %s", w, out)
				}
			}
			for _, img := range []string{q, m} {
				for _, r := range reads {
					if out, _ := dfQemu(t, "qemu-io", "-f", "qcow2", "-c", r, img); strings.Contains(out, "failed") {
						t.Errorf("qemu-io %s %s: %s", r, filepath.Base(img), out)
					}
					if out, _ := dfIo("-f", "qcow2", "-c", r, img); strings.Contains(out, "failed") {
						t.Errorf("minivmm io %s %s: %s", r, filepath.Base(img), out)
					}
				}
				for _, args := range [][]string{
					{"check", img}, {"check", "--output=json", img},
					{"info", img}, {"info", "--output=json", img},
					{"map", "--output=json", img}, {"map", img},
				} {
					want, wc := dfQemu(t, "qemu-img", args...)
					got, gc := dfImg(args...)
					if args[0] == "info" {
						// The data file's allocation differs with the writer.
						want, got = dropLine(want, "disk size", "actual-size"), dropLine(got, "disk size", "actual-size")
					}
					// Known difference (not the data file's): with
					// subclusters, QEMU reports the host offset of
					// unallocated subclusters of an allocated cluster.
					if args[0] == "map" && strings.Contains(opts, "extended_l2") {
						continue
					}
					if got != want || gc != wc {
						t.Errorf("%q: exit %d\n%s\nqemu-img: exit %d\n%s", args, gc, got, wc, want)
					}
				}
			}
			if out, code := dfQemu(t, "qemu-img", "compare", q, m); code != 0 {
				t.Errorf("qemu-img compare: %s", out)
			}
			if strings.Contains(opts, "raw") {
				// The raw data file is the disk.
				if out, code := dfQemu(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", md, m); code != 0 {
					t.Errorf("raw data file vs image: %s", out)
				}
				if out, code := dfQemu(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", qd, q); code != 0 {
					t.Errorf("raw data file vs image (minivmm wrote): %s", out)
				}
			}
		})
	}
}

// dropLine removes the lines that contain any of keys.
func dropLine(s string, keys ...string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		drop := false
		for _, k := range keys {
			drop = drop || strings.Contains(l, k)
		}
		if !drop {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// TestDataFileRefusals: what QEMU refuses with a data file, minivmm
// refuses in the same words and exit codes.
func TestDataFileRefusals(t *testing.T) {
	crNeedQemu(t)
	fdtest.Check(t)
	dir := t.TempDir()
	img, data := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "a.data")
	if out, code := dfQemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+data, img, "1M"); code != 0 {
		t.Fatal(out)
	}
	missing := filepath.Join(dir, "m.qcow2")
	if out, code := dfQemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "gone.data"), missing, "1M"); code != 0 {
		t.Fatal(out)
	}
	os.Remove(filepath.Join(dir, "gone.data"))
	for _, args := range [][]string{
		{"snapshot", "-c", "s1", img},
		{"snapshot", "-a", "s1", img},
		{"snapshot", "-d", "s1", img},
		{"snapshot", "-l", img},
		{"amend", "-o", "data_file_raw=on", img},
		{"amend", "-o", "compat=0.10", img},
		{"check", missing},
		// info does not open the data file (QEMU's no-I/O open).
		{"info", missing}, {"info", "--output=json", "--backing-chain", missing},
		{"map", missing},
		{"create", "-f", "qcow2", "-o", "data_file_raw=on", filepath.Join(dir, "n1.qcow2"), "1M"},
		{"create", "-f", "qcow2", "-o", "compat=0.10,data_file=" + filepath.Join(dir, "n2.data"), filepath.Join(dir, "n2.qcow2"), "1M"},
		{"create", "-f", "qcow2", "-o", "data_file=" + filepath.Join(dir, "n3.data") + ",data_file_raw=on,backing_file=" + img + ",backing_fmt=qcow2", filepath.Join(dir, "n3.qcow2"), "1M"},
		{"create", "-f", "qcow2", "-o", "data_file=" + filepath.Join(dir, "no/such/dir"), filepath.Join(dir, "n4.qcow2"), "1M"},
	} {
		want, wc := dfQemu(t, "qemu-img", args...)
		got, gc := dfImg(args...)
		if got != want || gc != wc {
			t.Errorf("%q: exit %d\n%s\nqemu-img: exit %d\n%s", args, gc, got, wc, want)
		}
	}
	for _, args := range [][]string{
		{"-f", "qcow2", "-c", "write -c 0 64k", img},
		{"-f", "qcow2", "-c", "read 0 4k", missing},
	} {
		want, wc := dfQemu(t, "qemu-io", args...)
		got, gc := dfIo(args...)
		if dfQuiet(got) != dfQuiet(want) || gc != wc {
			t.Errorf("io %q: exit %d\n%s\nqemu-io: exit %d\n%s", args, gc, got, wc, want)
		}
	}
}

// TestDataFileAmend: renaming, dropping and naming again the data file,
// and turning data-file-raw off, as qemu-img amend does, to the byte.
func TestDataFileAmend(t *testing.T) {
	crNeedQemu(t)
	fdtest.Check(t)
	dir := t.TempDir()
	run := func(tool string, img, data string) string {
		var log strings.Builder
		do := func(args ...string) {
			var out string
			var code int
			if tool == "qemu-img" {
				out, code = dfQemu(t, "qemu-img", args...)
			} else {
				out, code = dfImg(args...)
			}
			log.WriteString(strings.ReplaceAll(out, dir, "DIR") + "rc=" + strconv.Itoa(code) + "\n")
		}
		opts := "driver=qcow2,file.driver=file,file.filename=" + img + ",data-file.driver=file,data-file.filename=" + data
		do("amend", "-o", "data_file_raw=off", img)
		do("amend", "-o", "data_file_raw=on", img)
		do("amend", "-o", "data_file=other", img)
		do("amend", "-o", "data_file=", "--image-opts", opts)
		do("amend", "-o", "data_file="+data, "--image-opts", opts)
		return log.String()
	}
	var imgs [2][]byte
	var logs [2]string
	for i, tool := range []string{"qemu-img", "minivmm"} {
		img, data := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "a.data")
		if out, code := dfQemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+data+",data_file_raw=on", img, "1M"); code != 0 {
			t.Fatal(out)
		}
		logs[i] = run(tool, img, data)
		imgs[i], _ = os.ReadFile(img)
		if out, code := dfQemu(t, "qemu-img", "check", img); code != 0 {
			t.Errorf("%s: qemu-img check: %s", tool, out)
		}
	}
	if logs[0] != logs[1] {
		t.Errorf("minivmm:\n%s\nqemu-img:\n%s", logs[1], logs[0])
	}
	if !bytes.Equal(imgs[0], imgs[1]) {
		t.Error("the amended images differ")
	}
}

// TestDataFileFdsets: image and data file both reached through -add-fd
// fd sets (the data file as the data-file child's /dev/fdset path), for
// reads, writes and check; every fd is given back.
func TestDataFileFdsets(t *testing.T) {
	crNeedQemu(t)
	fdtest.Check(t)
	dir := t.TempDir()
	img, data := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "a.data")
	if out, code := dfQemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+data, img, "1M"); code != 0 {
		t.Fatal(out)
	}
	fd := func(p string, flags int) string { return strconv.Itoa(rawFd(t, p, flags)) }
	opts := "driver=qcow2,file.driver=file,file.filename=/dev/fdset/1,data-file.driver=file,data-file.filename=/dev/fdset/2"
	out, code := dfIo("--image-opts", "-add-fd", "fd="+fd(img, unix.O_RDWR)+",set=1", "-add-fd", "fd="+fd(data, unix.O_RDWR)+",set=2",
		"-c", "write -P 0x5a 64k 64k", "-c", "read -P 0x5a 64k 64k", opts)
	if code != 0 || strings.Contains(out, "failed") {
		t.Fatalf("minivmm io over fdsets: %s", out)
	}
	if out, _ := dfQemu(t, "qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 64k 64k", img); strings.Contains(out, "failed") {
		t.Errorf("qemu-io: %s", out)
	}
	out, code = dfImg("check", "--image-opts", "-add-fd", "fd="+fd(img, unix.O_RDONLY)+",set=1", "-add-fd", "fd="+fd(data, unix.O_RDONLY)+",set=2", opts)
	if want, _ := dfQemu(t, "qemu-img", "check", img); code != 0 || out != want {
		t.Errorf("check over fdsets: %d\n%s\nqemu-img:\n%s", code, out, want)
	}
}

// TestDataFileConvert: converting to and from images with a data file
// gives the same disk (qemu-img compare), clean images, and the data
// file named in the target.
func TestDataFileConvert(t *testing.T) {
	crNeedQemu(t)
	fdtest.Check(t)
	dir := t.TempDir()
	src, srcData := filepath.Join(dir, "s.qcow2"), filepath.Join(dir, "s.data")
	if out, code := dfQemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+srcData, src, "1M"); code != 0 {
		t.Fatal(out)
	}
	dfQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 7 0 100k", "-c", "write -P 9 512k 64k", src)
	for i, raw := range []string{"off", "on"} {
		dst, dstData := filepath.Join(dir, "d"+strconv.Itoa(i)+".qcow2"), filepath.Join(dir, "d"+strconv.Itoa(i)+".data")
		if out, code := dfImg("convert", "-O", "qcow2", "-o", "data_file="+dstData+",data_file_raw="+raw, src, dst); code != 0 {
			t.Fatalf("convert to: %s", out)
		}
		if out, code := dfQemu(t, "qemu-img", "compare", src, dst); code != 0 {
			t.Errorf("compare %s: %s", raw, out)
		}
		if out, code := dfQemu(t, "qemu-img", "check", dst); code != 0 {
			t.Errorf("check %s: %s", raw, out)
		}
		plain := filepath.Join(dir, "p"+strconv.Itoa(i)+".raw")
		if out, code := dfImg("convert", "-O", "raw", dst, plain); code != 0 {
			t.Fatalf("convert from: %s", out)
		}
		if out, code := dfQemu(t, "qemu-img", "compare", "-F", "raw", src, plain); code != 0 {
			t.Errorf("compare from %s: %s", raw, out)
		}
	}
}

// TestDataFileResize: resizing an image with a data file resizes the
// data file too, as qemu-img's does; the images stay the same.
func TestDataFileResize(t *testing.T) {
	crNeedQemu(t)
	fdtest.Check(t)
	dir := t.TempDir()
	var sizes [2][]int64
	for i, tool := range []string{"qemu-img", "minivmm"} {
		img, data := filepath.Join(dir, tool+".qcow2"), filepath.Join(dir, tool+".data")
		if out, code := dfQemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+data+",data_file_raw=on", img, "1M"); code != 0 {
			t.Fatal(out)
		}
		dfQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 3 0 1M", img)
		for _, size := range []string{"3M", "512k"} {
			args := []string{"resize", "-f", "qcow2", img, "3M"}
			if size != "3M" {
				args = []string{"resize", "-f", "qcow2", "--shrink", img, "512k"}
			}
			var out string
			var code int
			if tool == "qemu-img" {
				out, code = dfQemu(t, "qemu-img", args...)
			} else {
				out, code = dfImg(args...)
			}
			if code != 0 {
				t.Fatalf("%s %q: %s", tool, args, out)
			}
			st, err := os.Stat(data)
			if err != nil {
				t.Fatal(err)
			}
			sizes[i] = append(sizes[i], st.Size())
		}
		if out, code := dfQemu(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", data, img); code != 0 {
			t.Errorf("%s: raw data file vs image: %s", tool, out)
		}
	}
	if !slices.Equal(sizes[0], sizes[1]) {
		t.Errorf("data file sizes: minivmm %v, qemu-img %v", sizes[1], sizes[0])
	}
	if out, code := dfQemu(t, "qemu-img", "compare", filepath.Join(dir, "qemu-img.qcow2"), filepath.Join(dir, "minivmm.qcow2")); code != 0 {
		t.Errorf("compare: %s", out)
	}
}

// TestDataFileCheckRepair: check and check -r all on images with a data
// file whose L2 tables were broken (a data cluster without COPIED, a
// compressed entry) print what qemu-img prints, exit as it exits, and
// repair to the same bytes.
func TestDataFileCheckRepair(t *testing.T) {
	crNeedQemu(t)
	fdtest.Check(t)
	for _, tc := range []struct {
		name  string
		entry func(old uint64) uint64 // the new L2 entry of guest cluster 1
	}{
		{"no COPIED", func(old uint64) uint64 { return old &^ (1 << 63) }},
		{"compressed", func(uint64) uint64 { return 1<<62 | 0x10000 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var imgs [2][]byte
			for _, tool := range []string{"qemu-img", "minivmm"} {
				img := filepath.Join(dir, tool[:1], "a.qcow2")
				if err := os.Mkdir(filepath.Dir(img), 0o755); err != nil {
					t.Fatal(err)
				}
				if out, code := dfQemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, tool[:1], "a.data"), img, "1M"); code != 0 {
					t.Fatal(out)
				}
				dfQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 1 0 128k", img)
				b, err := os.ReadFile(img)
				if err != nil {
					t.Fatal(err)
				}
				be := binary.BigEndian
				l2 := be.Uint64(b[be.Uint64(b[40:]):]) & 0x00fffffffffffe00
				be.PutUint64(b[l2+8:], tc.entry(be.Uint64(b[l2+8:])))
				if err := os.WriteFile(img, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for _, args := range [][]string{{"check"}, {"check", "--output=json"}, {"check", "-r", "all"}} {
				var outs [2]string
				var codes [2]int
				for i, tool := range []string{"qemu-img", "minivmm"} {
					a := append(slices.Clone(args), filepath.Join(dir, tool[:1], "a.qcow2"))
					if i == 0 {
						outs[i], codes[i] = dfQemu(t, "qemu-img", a...)
					} else {
						outs[i], codes[i] = dfImg(a...)
					}
					outs[i] = strings.ReplaceAll(outs[i], filepath.Join(dir, tool[:1]), "DIR")
				}
				if outs[0] != outs[1] || codes[0] != codes[1] {
					t.Errorf("%q: exit %d\n%s\nqemu-img: exit %d\n%s", args, codes[1], outs[1], codes[0], outs[0])
				}
			}
			for i, tool := range []string{"qemu-img", "minivmm"} {
				imgs[i], _ = os.ReadFile(filepath.Join(dir, tool[:1], "a.qcow2"))
				imgs[i] = bytes.ReplaceAll(imgs[i], []byte(filepath.Join(dir, tool[:1])), []byte(filepath.Join(dir, "x")))
			}
			if !bytes.Equal(imgs[0], imgs[1]) {
				t.Error("the repaired images differ")
			}
		})
	}
}
