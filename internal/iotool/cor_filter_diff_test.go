package iotool

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCopyOnReadFilterDifferential: the copy-on-read filter driver over a
// plain filename (open -o driver=copy-on-read,file.driver=qcow2 IMAGE,
// and over blkdebug) and -C, side by side with qemu-io 7.2: each tool
// reads through the filter on its own copy of one chain; the outputs and
// exit codes agree, and the overlays left map alike (qemu-img map) and
// hold what the chain read (qemu-img compare with the backing cut).
func TestCopyOnReadFilterDifferential(t *testing.T) {
	bin := qemuIO(t)
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	t.Parallel()
	for _, script := range [][]string{
		{"-c", "open -o driver=copy-on-read,file.driver=qcow2 TOP", "-c", "read -P 0 1M 128k", "-c", "read 0 0",
			"-c", "read -P 0x55 3M 1k", "-c", "read -P 0 3M1k 1k", "-c", "read -P 0x66 5M 70k", "-c", "map"},
		{"-c", "open -o driver=copy-on-read,file.driver=blkdebug,file.config=CONF,file.image.driver=qcow2 TOP", "-c", "read -P 0 1M 128k",
			"-c", "read 2M 64k"},
		{"-c", "open -r -o driver=copy-on-read,file.driver=qcow2 TOP"},
		{"-C", "-c", "read -P 0x55 3M 4k", "-c", "read 0 1", "-c", "map", "TOP"},
		{"-c", "open -o driver=copy-on-read,file.driver=raw,file.file.driver=file TOP", "-c", "read 0 1"},
	} {
		var maps, outs [2]string
		for i, real := range []bool{false, true} {
			dir := t.TempDir()
			base, top, conf := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2"), filepath.Join(dir, "bd.conf")
			for _, c := range [][]string{
				{"qemu-img", "create", "-q", "-f", "qcow2", base, "8M"},
				{"qemu-io", "-c", "write -P 0x55 3M 1k", "-c", "write -P 0x66 5M 70k", base},
				{"qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top},
				{"qemu-io", "-f", "qcow2", "-c", "write -z -u 1M 64k", top},
			} {
				if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
					t.Fatalf("%q: %v\n%s", c, err, out)
				}
			}
			// An error at any copy at 1M: the allocated cluster there is
			// not copied again, so the read succeeds.
			if err := os.WriteFile(conf, []byte("[inject-error]\nevent = \"cor_write\"\nsector = \"2048\"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			args := make([]string, len(script))
			for j, a := range script {
				args[j] = strings.NewReplacer("TOP", top, "CONF", conf).Replace(a)
			}
			var o, e string
			var code int
			if real {
				o, e, code = runQemuIO(t, bin, "", args...)
			} else {
				o, e, code = ioRun(args, "")
			}
			outs[i] = strings.ReplaceAll(normalize(o+e), dir, "DIR") + "exit " + string(rune('0'+code))
			m, err := exec.Command("qemu-img", "map", "--output=json", "--image-opts", "driver=qcow2,file.filename="+top+",backing=").CombinedOutput()
			if err != nil {
				t.Fatalf("map: %v\n%s", err, m)
			}
			maps[i] = string(m)
			if out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", base, top).CombinedOutput(); err != nil {
				t.Errorf("%q: the chain reads otherwise after the copies: %v\n%s", script, err, out)
			}
		}
		if outs[0] != outs[1] {
			t.Errorf("%q:\nminivmm:\n%s\nqemu-io:\n%s", script, outs[0], outs[1])
		}
		if maps[0] != maps[1] {
			t.Errorf("%q: overlay without its backing maps\n%s\nqemu-io left\n%s", script, maps[0], maps[1])
		}
	}
}
