package imgtool

import (
	"path/filepath"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
)

// TestImgRebasePastOldBackingEOF: where the old backing chain ends before
// the overlay does, the overlay reads zeroes there; after rebasing onto a
// longer new backing file it must still (issue 11: it read the new
// backing file's data). Every byte of the overlay, as qemu-io reads it,
// is the same before and after, and the same as after qemu-img 7.2's
// rebase of a copy.
func TestImgRebasePastOldBackingEOF(t *testing.T) {
	crNeedQemu(t)
	fdtest.Check(t)
	for _, tc := range []struct {
		name string
		// setup runs in dir; the overlay is ov.qcow2, 320k.
		setup   [][]string
		backing string
	}{
		{"new-below-old", [][]string{
			{"qemu-img", "create", "-f", "qcow2", "base_new.qcow2", "320k"},
			{"qemu-io", "-c", "write -P 0x11 0 320k", "base_new.qcow2"},
			{"qemu-img", "create", "-f", "qcow2", "-b", "base_new.qcow2", "-F", "qcow2", "base_old.qcow2", "256k"},
			{"qemu-io", "-c", "write -P 0x22 0 256k", "base_old.qcow2"},
			{"qemu-img", "create", "-f", "qcow2", "-b", "base_old.qcow2", "-F", "qcow2", "ov.qcow2", "320k"},
		}, "base_new.qcow2"},
		{"new-unrelated", [][]string{
			{"qemu-img", "create", "-f", "qcow2", "base_new.qcow2", "320k"},
			{"qemu-io", "-c", "write -P 0x11 0 320k", "base_new.qcow2"},
			{"qemu-img", "create", "-f", "qcow2", "base_old.qcow2", "256k"},
			{"qemu-io", "-c", "write -P 0x22 0 256k", "base_old.qcow2"},
			{"qemu-img", "create", "-f", "qcow2", "-b", "base_old.qcow2", "-F", "qcow2", "ov.qcow2", "320k"},
		}, "base_new.qcow2"},
		{"overlay-writes-past-eof", [][]string{
			{"qemu-img", "create", "-f", "qcow2", "base_new.qcow2", "320k"},
			{"qemu-io", "-c", "write -P 0x11 0 320k", "base_new.qcow2"},
			{"qemu-img", "create", "-f", "qcow2", "-b", "base_new.qcow2", "-F", "qcow2", "base_old.qcow2", "256k"},
			{"qemu-img", "create", "-f", "qcow2", "-b", "base_old.qcow2", "-F", "qcow2", "ov.qcow2", "320k"},
			{"qemu-io", "-c", "write -P 0x33 288k 4k", "ov.qcow2"},
		}, "base_new.qcow2"},
		// A shorter layer between the old backing file and the new
		// one: past mid's end the old chain reads zeroes too.
		{"short-middle-layer", [][]string{
			{"qemu-img", "create", "-f", "qcow2", "base_new.qcow2", "320k"},
			{"qemu-io", "-c", "write -P 0x11 0 320k", "base_new.qcow2"},
			{"qemu-img", "create", "-f", "qcow2", "-b", "base_new.qcow2", "-F", "qcow2", "mid.qcow2", "256k"},
			{"qemu-img", "create", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "base_old.qcow2", "320k"},
			{"qemu-io", "-c", "write -P 0x22 0 64k", "base_old.qcow2"},
			{"qemu-img", "create", "-f", "qcow2", "-b", "base_old.qcow2", "-F", "qcow2", "ov.qcow2", "320k"},
		}, "base_new.qcow2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, ref := t.TempDir(), t.TempDir()
			for _, c := range tc.setup {
				crRun(t, dir, c[0], c[1:]...)
			}
			files := []string{"base_new.qcow2", "base_old.qcow2", "ov.qcow2"}
			if tc.name == "short-middle-layer" {
				files = append(files, "mid.qcow2")
			}
			crCopyDir(t, dir, ref, files)
			dump := func(d string) string {
				return crRun(t, d, "qemu-io", "-r", "-c", "read -v 0 320k", "ov.qcow2")
			}
			before := dump(dir)
			args := []string{"rebase", "-b", tc.backing, "-F", "qcow2", "ov.qcow2"}
			if code, out, errs := crImg(t, dir, args...); code != 0 || out != "" || errs != "" {
				t.Fatalf("rebase: %d %q %q", code, out, errs)
			}
			after := dump(dir)
			if got := readLine(after, "00040000:"); got != "00040000:  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................" {
				t.Errorf("read -v 256k after rebase: %q", got)
			}
			if dropTimes(before) != dropTimes(after) {
				t.Errorf("qemu-io reads differ after rebase")
			}
			crCheck(t, dir, "ov.qcow2")
			crRun(t, ref, "qemu-img", args...)
			crIdentical(t, dir, "ov.qcow2", filepath.Join(ref, "ov.qcow2"))
		})
	}
}

func readLine(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// dropTimes removes qemu-io's timing line.
func dropTimes(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, " sec (") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
