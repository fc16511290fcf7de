package iotool

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
)

// TestOpenOptionsDifferential runs open -o and reopen -o with options
// only QemuOpts takes (flat keys: a value beside dotted keys under it,
// names keyval refuses, an id) in qemu-io and minivmm io: the option
// string is parsed as QemuOpts and the driver judges what it gets
// (qcow2's overlap-check conflict, iotests 137 and 080).
func TestOpenOptionsDifferential(t *testing.T) {
	fdtest.Check(t)
	bin := qemuIO(t)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed")
	}
	cases := [][]string{
		{"-c", "open -o overlap-check.inactive-l2=on IMG", "-c", "write 0 4k"},
		{"-c", "open -o overlap-check.inactive-l2=x IMG"},
		{"-c", "open -o overlap-check=constant,overlap-check.template=all IMG"},
		{"-c", "open -o overlap-check=all,overlap-check.template=all,overlap-check.main-header=off IMG", "-c", "write 0 4k"},
		{"-c", "open -o overlap-check.template=all,overlap-check=none IMG"},
		{"-c", "open -o overlap-check=constant,overlap-check.active-l2=x IMG"},
		{"-c", "open -o overlap-check=x,overlap-check.template=x IMG"},
		{"-c", "open -o overlap-check.template=cached,overlap-check.template=x IMG"},
		{"-c", "open -o overlap-check=5 IMG"},
		{"-c", "open -o id=x IMG"},
		{"-c", "open -o id=1 IMG"},
		{"-c", "open -o a..b=1 IMG"},
		{"-c", "open -o help IMG"},
		{"-c", "open -o lazy-refcounts=on,,x IMG"},
		// Short-form booleans: taken, with QEMU 7.2's deprecation warning.
		{"-c", "open -o lazy-refcounts IMG", "-c", "info"},
		{"-c", "open -o noread-only,lazy-refcounts=on IMG", "-c", "write 0 4k"},
		{"-c", "open -o driver=qcow2,file.filename=IMG,nolazy-refcounts,help"},
		{"-c", "open -o driver=qcow2,file.filename=IMG,,x"},
		{"-c", "open -o driver=qcow2,file.driver=file,file.filename=IMG", "-c", "info"},
		{"-f", "qcow2", "-c", "reopen -o overlap-check=constant,overlap-check.template=all", "-c", "reopen -o overlap-check=constant,overlap-check.template=constant",
			"-c", "reopen -o overlap-check=all,overlap-check.template=none", "-c", "reopen -o overlap-check.template=all", "-c", "write 0 4k", "IMG"},
		{"-f", "qcow2", "-c", "reopen -o overlap-check=none", "-c", "reopen -o overlap-check.template=blubb", "-c", "reopen -o overlap-check.inactive-l1=on", "-c", "reopen -o overlap-check.inactive-l1=x", "IMG"},
	}
	for i, args := range cases {
		var got [2]string
		for j := range got {
			img := filepath.Join(t.TempDir(), "t.qcow2")
			if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", img, "1M").CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create: %v: %s", err, out)
			}
			a := make([]string, len(args))
			for k, s := range args {
				a[k] = strings.ReplaceAll(s, "IMG", img)
			}
			var out, errOut string
			var code int
			if j == 0 {
				out, errOut, code = runQemuIO(t, bin, "", a...)
			} else {
				out, errOut, code = ioRun(a, "")
			}
			r := strings.NewReplacer(img, "IMG")
			got[j] = normalize(r.Replace(out)) + "\n--\n" + r.Replace(errOut) + "\nexit " + strconv.Itoa(code)
		}
		if got[0] != got[1] {
			t.Errorf("case %d %q:\nqemu-io:\n%s\nminivmm io:\n%s", i, args, got[0], got[1])
		}
	}
}

// FuzzParseOpenOptions checks that any option string parses or is
// refused without a panic, and that what parses renders its keys again.
func FuzzParseOpenOptions(f *testing.F) {
	for _, s := range []string{"overlap-check=constant,overlap-check.template=all", "a..b=1", "id=x", "file.filename=a,,b",
		"children.0.file=x,children.1=y", "noread-only,help", "a=1,a.b=2,a.b.c=3", ",,", "=", "x.0=1,x.y=2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		shortBooleans(s)
		o, err := parseOpenOptions(s)
		if err == nil && o == nil {
			t.Fatalf("%q: no options and no error", s)
		}
	})
}
