package imgtool

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestImgMapPreallocation: qemu-img map asks the file beneath a qcow2
// whether data clusters read as zeroes only when the image's metadata
// looks preallocated, so falloc images and files cut short (data
// clusters past the end) map as qemu-img maps them.
func TestImgMapPreallocation(t *testing.T) {
	t.Parallel()
	imgReadNeedQemu(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	truncate := func(name string, by int64) {
		fi, err := os.Stat(p(name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p(name), fi.Size()-by); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, opts, io string
		cut            int64 // bytes cut off the file's end
	}{
		{"plain", "", "write -P 1 0 64k", 0},
		{"plain-zero-data", "", "write -P 0 128k 64k", 0},
		{"metadata", "preallocation=metadata", "write -P 1 0 64k", 0},
		{"metadata-cut", "preallocation=metadata", "write -P 1 0 64k", 876256},
		{"falloc", "preallocation=falloc", "write -P 1 0 64k", 0},
		{"full", "preallocation=full", "write -P 1 64k 64k", 0},
		{"cut-in-data", "", "write -P 1 0 128k", 100000},
		{"written-cut", "", "write -P 3 0 4M", 65536 + 1000},
		{"written-cut-metadata", "", "write -P 3 0 4M", 4 << 20},
	} {
		name := tc.name + ".qcow2"
		args := []string{"create", "-q", "-f", "qcow2", p(name), "4M"}
		if tc.opts != "" {
			args = append(args, "-o", tc.opts)
		}
		imgReadRun(t, "qemu-img", args...)
		imgReadRun(t, "qemu-io", "-c", tc.io, p(name))
		if tc.cut > 0 {
			truncate(name, tc.cut)
		}
		for _, output := range []string{"json", "human"} {
			args := []string{"map", "--output=" + output, p(name)}
			var out, errb bytes.Buffer
			code := runImg(args, &out, &errb)
			want, err := exec.Command("qemu-img", args...).Output()
			if err != nil {
				t.Fatalf("qemu-img %q: %v", args, err)
			}
			if code != 0 || out.String() != string(want) || errb.Len() != 0 {
				t.Errorf("%s %s: exit %d\n%s%s\nwant\n%s", tc.name, output, code, out.String(), errb.String(), want)
			}
		}
	}
}
