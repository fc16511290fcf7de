package iotool

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
)

// TestReopenKeepOldDifferential runs qemu-io's reopen -o on an overlay
// with a backing file (QEMU's iotest 133's cases and more) in qemu-io and
// minivmm io: the options are taken as qemu-io takes them (no QAPI
// schema, the old ones kept), and the errors name the option as the node
// knows it.
func TestReopenKeepOldDifferential(t *testing.T) {
	fdtest.Check(t)
	bin := qemuIO(t)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed")
	}
	cases := [][]string{
		{"-f", "qcow2", "-c", "reopen -o node-name=foo", "IMG"},
		{"-f", "qcow2", "-c", "reopen -o file.node-name=foo", "IMG"},
		{"-f", "qcow2", "-c", "reopen -o backing.node-name=foo", "IMG"},
		{"-c", "open -o node-name=foo IMG", "-c", "reopen -o node-name=foo", "-c", "reopen", "-c", "reopen -o node-name=bar"},
		{"-c", "open -o file.node-name=foo IMG", "-c", "reopen -o file.node-name=foo", "-c", "reopen", "-c", "reopen -o file.node-name=bar"},
		{"-c", "open -o backing.node-name=foo IMG", "-c", "reopen -o backing.node-name=foo", "-c", "reopen", "-c", "reopen -o backing.node-name=bar"},
		{"-c", "open -o backing.node-name=foo BASE", "-c", "info"},
		{"-f", "qcow2", "-c", "reopen -o driver=raw", "IMG"},
		{"-f", "qcow2", "-c", "reopen -o file.driver=qcow2", "IMG"},
		{"-f", "qcow2", "-c", "reopen -o backing.driver=file", "IMG"},
		{"-f", "qcow2", "-c", "reopen -o driver=qcow2", "-c", "reopen -o file.driver=file", "-c", "reopen -o backing.driver=qcow2", "IMG"},
		{"-f", "qcow2", "-c", "reopen -o read-only=foo", "-c", "reopen -o cache.no-flush=bar", "-c", "reopen -o cache.direct=baz", "-c", "reopen -o auto-read-only=qux", "IMG"},
		{"-f", "qcow2", "-c", "reopen -r -o read-only=on", "-c", "reopen -c none -o cache.direct=on", "IMG"},
	}
	for i, args := range cases {
		var got [2]string
		for j := range got {
			dir := t.TempDir()
			base, img := filepath.Join(dir, "b.qcow2"), filepath.Join(dir, "t.qcow2")
			for _, c := range [][]string{{"create", "-q", "-f", "qcow2", base, "1M"},
				{"create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", img}} {
				if out, err := exec.Command(qemuImg, c...).CombinedOutput(); err != nil {
					t.Fatalf("qemu-img %q: %v: %s", c, err, out)
				}
			}
			a := make([]string, len(args))
			for k, s := range args {
				a[k] = strings.ReplaceAll(strings.ReplaceAll(s, "IMG", img), "BASE", base)
			}
			var out, errOut string
			var code int
			if j == 0 {
				out, errOut, code = runQemuIO(t, bin, "", a...)
			} else {
				out, errOut, code = ioRun(a, "")
			}
			r := strings.NewReplacer(img, "IMG", base, "BASE")
			got[j] = normalize(r.Replace(out)) + "\n--\n" + r.Replace(errOut) + "\nexit " + strconv.Itoa(code)
		}
		if got[0] != got[1] {
			t.Errorf("case %d %q:\nqemu-io:\n%s\nminivmm io:\n%s", i, args, got[0], got[1])
		}
	}
}
