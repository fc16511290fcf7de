package imgtool

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// rebase -u takes any driver name qemu-img knows, also ones minivmm has
// not (host_device), and records it; an unknown name is refused. Both as
// qemu-img does it, side by side.
func TestRebaseUnsafeFormatNames(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	for _, fmtName := range []string{"host_device", "nbd", "qcow2", "foo"} {
		var outs [2]string
		for i, real := range []bool{false, true} {
			p := filepath.Join(dir, fmtName+".qcow2")
			os.Remove(p)
			if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, "1M").CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			args := []string{"rebase", "-u", "-b", "/some/backing/file/path", "-F", fmtName, p}
			var code int
			var errs bytes.Buffer
			if real {
				cmd := exec.Command("qemu-img", args...)
				cmd.Stderr = &errs
				cmd.Run()
				code = cmd.ProcessState.ExitCode()
			} else {
				code = runImg(args, &bytes.Buffer{}, &errs)
			}
			info, _ := exec.Command("qemu-img", "info", "-U", "--output=json", p).Output()
			outs[i] = string(rune('0'+code)) + " " + errs.String() + string(bytes.ReplaceAll(info, []byte(p), []byte("P")))
		}
		if outs[0] != outs[1] {
			t.Errorf("-F %s: minivmm:\n%s\nqemu-img:\n%s", fmtName, outs[0], outs[1])
		}
	}
}
