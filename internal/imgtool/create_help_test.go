package imgtool

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"minivmm/internal/qtool"
)

// TestCreateOptionHelp compares `create -o help` (and `?`, and convert's)
// with qemu-img's: the same header and trailer, and every option minivmm
// lists listed by qemu-img in the same words (qemu-img lists a few more:
// encryption). Nothing is created.
func TestCreateOptionHelp(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	target := filepath.Join(dir, "new.img")
	for _, args := range [][]string{
		{"create", "-f", "qcow2", "-o", "help"},
		{"create", "-f", "qcow2", "-o", "?"},
		{"create", "-f", "qcow2", "-o", "cluster_size=4k,help", "-o", "lazy_refcounts=on"},
		{"create", "-f", "raw", "-o", "help"},
		{"create", "-o", "help"},
		{"create", "-f", "raw", "-o", "help", target, "1M"},
		{"create", "-f", "qcow2", "-o", "?", target, "1M"},
		{"convert", "-O", "qcow2", "-o", "help"},
		{"convert", "-O", "raw", "-o", "help", "a", target},
		{"create", "-f", "bogus", "-o", "help"},
		{"create", "-f", "qcow2", "-o", "help=on"},
	} {
		want, _ := exec.Command("qemu-img", args...).CombinedOutput()
		wantCode := 0
		if ee, ok := err(exec.Command("qemu-img", args...).Run()); ok {
			wantCode = ee
		}
		var out, errb bytes.Buffer
		code := runImg(args, &out, &errb)
		got := out.String() + errb.String()
		if code != wantCode {
			t.Errorf("%q: exit %d, qemu-img %d", args, code, wantCode)
		}
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		if gl[0] != wl[0] || !strings.HasSuffix(string(want), strings.Join(trailer(gl), "\n")) {
			t.Errorf("%q:\n%s\nqemu-img:\n%s", args, got, want)
			continue
		}
		for _, l := range gl {
			if !strings.Contains(string(want), l+"\n") {
				t.Errorf("%q: line %q is not qemu-img's", args, l)
			}
		}
		if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 0 {
			t.Fatalf("%q created %v", args, m)
		}
	}
}

// trailer is what follows the option lines.
func trailer(lines []string) []string {
	for i, l := range lines {
		if i > 0 && !strings.HasPrefix(l, "  ") {
			return lines[i:]
		}
	}
	return nil
}

func err(e error) (int, bool) {
	if ee, ok := e.(*exec.ExitError); ok {
		return ee.ExitCode(), true
	}
	return 0, false
}

// TestVersion: --version and -V say the QEMU version spoken and
// minivmm's own, in qemu-img's shape, naming the program as run.
func TestVersion(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--version", "-V"} {
		var out, errb bytes.Buffer
		code := Run(qtool.Program{Name: "minivmm img", Version: "1.2.3"}, []string{arg}, &out, &errb)
		if want := "minivmm img version " + qtool.QEMUVersion + " (minivmm 1.2.3)\n"; code != 0 || out.String() != want || errb.Len() != 0 {
			t.Errorf("%s: exit %d, stdout %q, stderr %q, want %q", arg, code, out.String(), errb.String(), want)
		}
	}
	if v, err := exec.Command("qemu-img", "--version").Output(); err == nil && !strings.HasPrefix(string(v), "qemu-img version 7.2.") {
		t.Errorf("the installed qemu-img is not the 7.2 minivmm speaks: %s", v)
	}
}

// TestProgramName: messages and the pointer to help name the program as
// it was run.
func TestProgramName(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	code := Run(qtool.Program{Name: "minivmm img", Version: "x"}, []string{"create"}, &out, &errb)
	if want := "minivmm img: Expecting image file name\nTry 'minivmm img --help' for more information\n"; code != 1 || errb.String() != want {
		t.Errorf("exit %d, stderr %q, want %q", code, errb.String(), want)
	}
}
