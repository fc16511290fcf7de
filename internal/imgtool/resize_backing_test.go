package imgtool

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
)

// TestImgResizeGrowOverBacking: growing a qcow2 image whose backing file
// is longer than it must leave the new area reading zeroes, not the
// backing file's data nor what an earlier shrink left in the last
// cluster (issue 11), as qemu-img resize does it. The same steps run with
// qemu-img on a copy; every byte qemu-io reads, qemu-img map's output,
// the exit codes and messages must match, and qemu-img check be clean.
func TestImgResizeGrowOverBacking(t *testing.T) {
	crNeedQemu(t)
	fdtest.Check(t)
	base := [][]string{
		{"qemu-img", "create", "-f", "qcow2", "base.qcow2", "1M"},
		{"qemu-io", "-c", "write -P 0x11 0 1M", "base.qcow2"},
	}
	for _, tc := range []struct {
		name    string
		setup   [][]string
		resizes [][]string // img resize arguments, in order
		size    string     // the final size, for the read
		failing bool       // the last resize fails (as qemu-img's)
	}{
		{"grow", append(base[:2:2],
			[]string{"qemu-img", "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "ov.qcow2", "512k"}),
			[][]string{{"ov.qcow2", "1M"}}, "1M", false},
		// The sequence: shrink to 520k, grow to 567k; the
		// cluster at 512k still holds 0x22 past 520k.
		{"shrink-then-grow", append(base[:2:2],
			[]string{"qemu-img", "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "ov.qcow2", "1M"},
			[]string{"qemu-io", "-c", "write -P 0x22 0 1M", "ov.qcow2"}),
			[][]string{{"--shrink", "ov.qcow2", "520k"}, {"ov.qcow2", "567k"}}, "567k", false},
		{"small-clusters-past-backing", append(base[:2:2],
			[]string{"qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=4k", "-b", "base.qcow2", "-F", "qcow2", "ov.qcow2", "1000k"},
			[]string{"qemu-io", "-c", "write -P 0x22 0 1000k", "ov.qcow2"}),
			[][]string{{"--shrink", "ov.qcow2", "511k"}, {"ov.qcow2", "2M"}}, "2M", false},
		{"extended-l2", append(base[:2:2],
			[]string{"qemu-img", "create", "-f", "qcow2", "-o", "extended_l2=on", "-b", "base.qcow2", "-F", "qcow2", "ov.qcow2", "1M"},
			[]string{"qemu-io", "-c", "write -P 0x22 0 1M", "ov.qcow2"}),
			[][]string{{"--shrink", "ov.qcow2", "520k"}, {"ov.qcow2", "567k"}, {"ov.qcow2", "900k"}}, "900k", false},
		// Backing file shorter than the image: nothing to hide.
		{"backing-shorter", append(base[:2:2],
			[]string{"qemu-img", "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "ov.qcow2", "1M"}),
			[][]string{{"ov.qcow2", "3M"}}, "3M", false},
		// Version 2 has no zero clusters: qemu-img refuses, and so do we
		// (changing nothing).
		{"compat-0.10", append(base[:2:2],
			[]string{"qemu-img", "create", "-f", "qcow2", "-o", "compat=0.10", "-b", "base.qcow2", "-F", "qcow2", "ov.qcow2", "512k"}),
			[][]string{{"ov.qcow2", "1M"}}, "512k", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, ref := t.TempDir(), t.TempDir()
			for _, c := range tc.setup {
				crRun(t, dir, c[0], c[1:]...)
			}
			crCopyDir(t, dir, ref, []string{"base.qcow2", "ov.qcow2"})
			for i, r := range tc.resizes {
				code, out, errs := crImg(t, dir, append([]string{"resize"}, r...)...)
				cmd := crCmd(ref, "qemu-img", append([]string{"resize"}, r...)...)
				qout, qerr := cmd.CombinedOutput()
				qcode := 0
				if qerr != nil {
					qcode = cmd.ProcessState.ExitCode()
				}
				last := i == len(tc.resizes)-1
				if want := tc.failing && last; (code != 0) != want || (qcode != 0) != want {
					t.Fatalf("resize %v: ours %d %q %q, qemu-img's %d %q", r, code, out, errs, qcode, qout)
				}
				ours := strings.ReplaceAll(out+errs, "minivmm img: ", "qemu-img: ")
				if ours != string(qout) {
					t.Fatalf("resize %v: ours says %q, qemu-img %q", r, ours, qout)
				}
			}
			read := func(d string) string {
				return dropTimes(crRun(t, d, "qemu-io", "-r", "-c", "read -v 0 "+tc.size, "ov.qcow2"))
			}
			if got, want := read(dir), read(ref); got != want {
				t.Errorf("qemu-io reads differ from qemu-img resize's: %s", firstLineDiff(got, want))
			}
			mapOf := func(d string) string {
				return crRun(t, d, "qemu-img", "map", "--output=json", "ov.qcow2")
			}
			if got, want := mapOf(dir), mapOf(ref); got != want {
				t.Errorf("map:\n%s\nqemu-img resize's:\n%s", got, want)
			}
			crCheck(t, dir, "ov.qcow2")
			crIdentical(t, dir, "ov.qcow2", filepath.Join(ref, "ov.qcow2"))
		})
	}
}

func firstLineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return "\n" + al[i] + "\n" + bl[i]
		}
	}
	return "(lengths differ)"
}

func crCmd(dir, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	return cmd
}
