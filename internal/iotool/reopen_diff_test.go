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
	type reopenCase struct {
		args  []string
		child bool // minivmm io in a process of its own (it kills itself)
		// dirty: the crash leaves refcounts behind, and the two hold
		// back different ones: only the dirty bit is compared.
		dirty bool
	}
	cases := []reopenCase{
		{args: []string{"-f", "qcow2", "-c", "reopen -o node-name=foo", "IMG"}},
		{args: []string{"-f", "qcow2", "-c", "reopen -o file.node-name=foo", "IMG"}},
		{args: []string{"-f", "qcow2", "-c", "reopen -o backing.node-name=foo", "IMG"}},
		{args: []string{"-c", "open -o node-name=foo IMG", "-c", "reopen -o node-name=foo", "-c", "reopen", "-c", "reopen -o node-name=bar"}},
		{args: []string{"-c", "open -o file.node-name=foo IMG", "-c", "reopen -o file.node-name=foo", "-c", "reopen", "-c", "reopen -o file.node-name=bar"}},
		{args: []string{"-c", "open -o backing.node-name=foo IMG", "-c", "reopen -o backing.node-name=foo", "-c", "reopen", "-c", "reopen -o backing.node-name=bar"}},
		{args: []string{"-c", "open -o backing.node-name=foo BASE", "-c", "info"}},
		{args: []string{"-c", "open -o backing.driver=raw IMG", "-c", "read -P 0 0 4k", "-c", "reopen -o backing.driver=raw"}},
		{args: []string{"-c", "open -o backing.driver=qcow2,backing.node-name=b IMG", "-c", "read -P 0 0 4k", "-c", "reopen -o backing.driver=raw"}},
		{args: []string{"-f", "qcow2", "-c", "reopen -o driver=raw", "IMG"}},
		{args: []string{"-f", "qcow2", "-c", "reopen -o file.driver=qcow2", "IMG"}},
		{args: []string{"-f", "qcow2", "-c", "reopen -o backing.driver=file", "IMG"}},
		{args: []string{"-f", "qcow2", "-c", "reopen -o driver=qcow2", "-c", "reopen -o file.driver=file", "-c", "reopen -o backing.driver=qcow2", "IMG"}},
		{args: []string{"-f", "qcow2", "-c", "reopen -o read-only=foo", "-c", "reopen -o cache.no-flush=bar", "-c", "reopen -o cache.direct=baz", "-c", "reopen -o auto-read-only=qux", "IMG"}},
		{args: []string{"-f", "qcow2", "-c", "reopen -r -o read-only=on", "-c", "reopen -c none -o cache.direct=on", "IMG"}},
		// 137's options a qcow2 reopen changes, and its bad values.
		{args: []string{"-f", "qcow2", "-c", "reopen -o overlap-check=all", "-c", "reopen -o overlap-check.template=none",
			"-c", "reopen -o overlap-check.main-header=off", "-c", "reopen -o overlap-check.main-header=x",
			"-c", "reopen -o overlap-check.template=blubb", "-c", "reopen -o overlap-check=blubb",
			"-c", "reopen -o lazy-refcounts=42", "-c", "reopen -o cache-clean-interval=-1", "-c", "reopen -o cache-clean-interval=5",
			"-c", "reopen -o pass-discard-other=off,pass-discard-request=off", "-c", "write 0 64k", "IMG"}},
		// The L2 cache remade by a reopen (written back first), and the
		// cache sizes' checks with the old options joined as QEMU joins them.
		{args: []string{"-f", "qcow2", "-c", "write -P 7 0 256k", "-c", "reopen -o l2-cache-entry-size=512", "-c", "read -P 7 0 256k",
			"-c", "write -P 8 64k 64k", "-c", "reopen -o cache-size=1M", "-c", "reopen -o l2-cache-size=512k", "-c", "reopen -o l2-cache-entry-size=4k",
			"-c", "read -P 8 64k 64k", "-c", "reopen -o cache-size=1M,l2-cache-size=2M", "-c", "reopen -o cache-size=1M,l2-cache-size=64k,refcount-cache-size=64k",
			"-c", "reopen -o l2-cache-entry-size=33k", "-c", "reopen -o l2-cache-entry-size=128k", "-c", "read -P 7 0 64k", "IMG"}},
		// lazy-refcounts: on leaves the image dirty at a crash, off
		// writes it back first; a failed reopen changes nothing.
		{args: []string{"-f", "qcow2", "-c", "reopen -o lazy-refcounts=on", "-c", "write -P 1 0 64k", "-c", "sigraise 9", "IMG"}, child: true, dirty: true},
		{args: []string{"-f", "qcow2", "-c", "reopen -o lazy-refcounts=on", "-c", "write -P 1 0 64k", "-c", "reopen -o lazy-refcounts=off",
			"-c", "write -P 2 1M 64k", "-c", "sigraise 9", "IMG"}, child: true},
		{args: []string{"-f", "qcow2", "-c", "reopen -o lazy-refcounts=on,overlap-check=blubb", "-c", "write -P 1 0 64k", "-c", "sigraise 9", "IMG"}, child: true},
		{args: []string{"-f", "qcow2", "-c", "reopen -o lazy-refcounts=on", "-c", "write -P 1 0 64k", "-c", "reopen -r", "-c", "sigraise 9", "IMG"}, child: true},
	}
	for i, c := range cases {
		args := c.args
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
			} else if c.child {
				out, errOut, code = runIOChild(t, a)
			} else {
				out, errOut, code = ioRun(a, "")
			}
			// What was left on disk: consistent, and dirty only where
			// lazy refcounts were on at the crash.
			check, _ := exec.Command(qemuImg, "check", "-U", img).CombinedOutput()
			info, _ := exec.Command(qemuImg, "info", "-U", "--output=json", img).CombinedOutput()
			dirty := strings.Contains(string(info), `"dirty-flag": true`)
			if c.dirty {
				check = nil
			}
			out += "\ncheck:\n" + string(check) + "dirty: " + strconv.FormatBool(dirty)
			r := strings.NewReplacer(img, "IMG", base, "BASE")
			got[j] = normalize(r.Replace(out)) + "\n--\n" + r.Replace(errOut) + "\nexit " + strconv.Itoa(code)
		}
		if got[0] != got[1] {
			t.Errorf("case %d %q:\nqemu-io:\n%s\nminivmm io:\n%s", i, args, got[0], got[1])
		}
	}
}
