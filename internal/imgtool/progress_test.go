package imgtool

// -p on compare, rebase and commit, side by side with qemu-img (convert's
// is in img_convert_b_test.go).

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// progChain makes base <- mid <- top (4 MiB) and two unrelated images in
// a new directory.
func progChain(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	for _, c := range [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", p("base.qcow2"), "4M"},
		{"qemu-io", "-c", "write -P 1 0 1M", "-c", "write -P 2 3M 512k", p("base.qcow2")},
		{"qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", p("mid.qcow2")},
		{"qemu-io", "-c", "write -P 3 512k 1M", "-c", "write -z 2M 64k", p("mid.qcow2")},
		{"qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", p("top.qcow2")},
		{"qemu-io", "-c", "write -P 4 1M 64k", "-c", "write -P 5 3584k 128k", p("top.qcow2")},
		{"qemu-img", "create", "-q", "-f", "qcow2", p("other.qcow2"), "4M"},
		{"qemu-io", "-c", "write -P 9 0 4M", p("other.qcow2")},
		{"qemu-img", "create", "-q", "-f", "qcow2", p("small.qcow2"), "1536k"},
		{"qemu-io", "-c", "write -P 9 0 1M", p("small.qcow2")},
		{"qemu-img", "create", "-q", "-f", "qcow2", p("big.qcow2"), "8M"},
	} {
		imgReadRun(t, c[0], c[1:]...)
	}
	return dir
}

// progRun runs img args in dir, in-process or with qemu-img, and returns
// stdout, stderr, the exit status and top.qcow2's map afterwards.
func progRun(t *testing.T, dir string, ours bool, args []string) [4]string {
	t.Helper()
	abs := make([]string, len(args))
	for i, a := range args {
		abs[i] = a
		if strings.HasSuffix(a, ".qcow2") {
			abs[i] = filepath.Join(dir, a)
		}
	}
	var r imgResult
	if ours {
		r = ourImgRun(abs...)
	} else {
		r = qemuImgRun(t, "", abs...)
	}
	m, _ := exec.Command("qemu-img", "map", "--output=json", filepath.Join(dir, "top.qcow2")).CombinedOutput()
	return [4]string{r.out, strings.ReplaceAll(r.err, dir+"/", ""), string(rune('0' + r.code)), string(m)}
}

func TestImgProgressInterop(t *testing.T) {
	t.Parallel()
	imgReadNeedQemu(t)
	for _, args := range [][]string{
		{"compare", "-p", "top.qcow2", "base.qcow2"},
		{"compare", "-p", "base.qcow2", "base.qcow2"},
		{"compare", "-p", "top.qcow2", "top.qcow2"},
		{"compare", "-p", "top.qcow2", "other.qcow2"},
		{"compare", "-p", "-s", "top.qcow2", "mid.qcow2"},
		{"compare", "-p", "top.qcow2", "big.qcow2"},
		{"compare", "-p", "-s", "top.qcow2", "big.qcow2"},
		{"compare", "-p", "-q", "top.qcow2", "top.qcow2"},
		{"compare", "-p", "none.qcow2", "top.qcow2"},
		{"rebase", "-p", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"},
		{"rebase", "-p", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2"},
		{"rebase", "-p", "-b", "other.qcow2", "-F", "qcow2", "top.qcow2"},
		{"rebase", "-p", "-b", "small.qcow2", "-F", "qcow2", "top.qcow2"},
		{"rebase", "-p", "-b", "big.qcow2", "-F", "qcow2", "top.qcow2"},
		{"rebase", "-p", "-b", "", "top.qcow2"},
		{"rebase", "-p", "-b", "base.qcow2", "-F", "qcow2", "mid.qcow2"},
		{"rebase", "-p", "-u", "-b", "other.qcow2", "-F", "qcow2", "top.qcow2"},
		{"rebase", "-p", "-b", "base.qcow2", "-F", "foo", "top.qcow2"},
		{"rebase", "-p", "-b", "none.qcow2", "-F", "qcow2", "top.qcow2"},
		{"commit", "-p", "base.qcow2"},
		{"commit", "-p", "-b", "other.qcow2", "top.qcow2"},
		{"commit", "-p", "none.qcow2"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			ours := progRun(t, progChain(t), true, args)
			theirs := progRun(t, progChain(t), false, args)
			if ours != theirs {
				t.Errorf("%q:\nours     %q\nqemu-img %q", args, ours, theirs)
			}
		})
	}
}

// TestImgCommitProgress: how far qemu-img's commit job has got when it
// prints varies from run to run, so only the line's shape is compared:
// from 0 to 100, rising, closed before "Image committed.".
func TestImgCommitProgress(t *testing.T) {
	t.Parallel()
	imgReadNeedQemu(t)
	for _, args := range [][]string{{"commit", "-p", "top.qcow2"}, {"commit", "-p", "-b", "base.qcow2", "top.qcow2"}} {
		for _, ours := range []bool{true, false} {
			r := progRun(t, progChain(t), ours, args)
			lines := strings.Split(strings.TrimSuffix(r[0], "\r\nImage committed.\n"), "\r")
			if r[2] != "0" || r[1] != "" || len(lines) < 2 || lines[0] != "    (0.00/100%)" || lines[len(lines)-1] != "    (100.00/100%)" {
				t.Errorf("%q (ours %v): %q", args, ours, r)
			}
			last := 0.0
			for _, l := range lines {
				var pct float64
				if _, err := fmt.Sscanf(l, "    (%f/100%%)", &pct); err != nil || pct < last {
					t.Errorf("%q (ours %v): bad or falling progress %q in %q", args, ours, l, r[0])
				}
				last = pct
			}
		}
	}
}
