package imgtool

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestImgCommitEmptyErrors: errors blkdebug injects at the events of
// emptying the top image whole (iotest 098) fail minivmm's commit as
// they fail qemu-img's, with the same message, and leave a top image
// that qemu-img check judges the same.
func TestImgCommitEmptyErrors(t *testing.T) {
	crNeedQemu(t)
	t.Parallel()
	for _, event := range []string{"l1_update", "empty_image_prepare", "reftable_update", "refblock_alloc", ""} {
		t.Run("event="+event, func(t *testing.T) {
			dir, ref := t.TempDir(), t.TempDir()
			crRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "64M")
			crRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2", "64M")
			crRun(t, dir, "qemu-io", "-c", "write 0 64k", "-c", "write -P 7 1M 4k", "top.qcow2")
			crCopyDir(t, dir, ref, []string{"base.qcow2", "top.qcow2"})
			conf := "[inject-error]\nevent = \"" + event + "\"\n"
			if event == "" {
				conf = ""
			}
			for _, d := range []string{dir, ref} {
				if err := os.WriteFile(filepath.Join(d, "blkdebug.conf"), []byte(conf), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			code, out, errs := crImg(t, dir, "commit", "blkdebug:blkdebug.conf:top.qcow2")
			q := runIn(ref, "qemu-img", "commit", "blkdebug:blkdebug.conf:top.qcow2")
			got := strings.ReplaceAll(out+errs, "minivmm img:", "qemu-img:")
			got = strings.ReplaceAll(got, "minivmm:", "qemu-img:")
			if (code == 0) != (q.err == nil) || got != q.out {
				t.Fatalf("minivmm's commit: %d %q\nqemu-img's: %v %q", code, got, q.err, q.out)
			}
			a := runIn(dir, "qemu-img", "check", "top.qcow2")
			b := runIn(ref, "qemu-img", "check", "top.qcow2")
			if a.out != b.out {
				t.Errorf("check top.qcow2 after minivmm's commit:\n%s\nafter qemu-img's:\n%s", a.out, b.out)
			}
			// The base as QEMU's (its clusters in an order of their own:
			// QEMU's mirror copies ranges concurrently).
			crCheck(t, dir, "base.qcow2")
			crIdentical(t, dir, "base.qcow2", filepath.Join(ref, "base.qcow2"))
		})
	}
}

type runResult struct {
	out string
	err error
}

// runIn runs a tool in dir, its output and error whatever they are.
func runIn(dir, name string, args ...string) runResult {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return runResult{string(out), err}
}
