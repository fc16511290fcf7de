package iotool

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRawWindowReopenDifferential: a raw node's window (offset, size,
// given as numbers or, in a json: filename, as strings) changes at a
// reopen that names it, stays at one that does not, and is refused
// there in QEMU's words, side by side with qemu-io 7.2.
func TestRawWindowReopenDifferential(t *testing.T) {
	bin := qemuIO(t)
	t.Parallel()
	var outs [2]string
	for i, real := range []bool{false, true} {
		dir := t.TempDir()
		img := filepath.Join(dir, "w.raw")
		for _, c := range [][]string{
			{"qemu-img", "create", "-q", "-f", "raw", img, "4k"},
			{"qemu-io", "-f", "raw", "-c", "write -P 0x33 512 512", "-c", "write -P 0x44 1536 512", img},
		} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%q: %v\n%s", c, err, out)
			}
		}
		args := []string{"-c", "reopen -r", "-c", "read -P 0x33 0 512", "-c", "length",
			"-c", "reopen -o offset=1536,size=512", "-c", "read -P 0x44 0 512", "-c", "length",
			"-c", "reopen -o size=513", "-c", "reopen -o offset=5000", "-c", "length",
			"-c", "reopen -w", "-c", "write -P 0x55 0 512", "-c", "read -P 0x55 0 512", "-c", "write 511 2",
			`json:{"driver":"raw","offset":"512","size":"1k","file":{"driver":"file","filename":"` + img + `"}}`}
		var o, e string
		var code int
		if real {
			o, e, code = runQemuIO(t, bin, "", args...)
		} else {
			o, e, code = ioRun(args, "")
		}
		outs[i] = strings.ReplaceAll(normalize(o)+"\n--\n"+e, dir, "DIR") + "exit " + string(rune('0'+code))
		if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "read -P 0x55 1536 512", img).CombinedOutput(); err != nil || strings.Contains(string(out), "fail") {
			t.Errorf("the write did not land in the reopened window: %v\n%s", err, out)
		}
	}
	if outs[0] != outs[1] {
		t.Errorf("minivmm:\n%s\nqemu-io:\n%s", outs[0], outs[1])
	}
}
