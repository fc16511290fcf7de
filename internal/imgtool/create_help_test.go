package imgtool

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"minivmm/internal/qtool"
)

// TestCreateOptionHelp compares `create -o help` (and `?`, convert's and
// amend's) with qemu-img's, byte for byte with the exit code, and -o
// lists qemu-img refuses as it reads them. Nothing is created or changed.
func TestCreateOptionHelp(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	target := filepath.Join(dir, "new.img")
	img := filepath.Join(t.TempDir(), "a.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, "1M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	before, _ := os.ReadFile(img)
	for _, args := range [][]string{
		{"create", "-f", "qcow2", "-o", "help"},
		{"create", "-f", "qcow2", "-o", "?"},
		{"create", "-f", "qcow2", "-o", "cluster_size=4k,help", "-o", "lazy_refcounts=on"},
		{"create", "-f", "raw", "-o", "help"},
		{"create", "-o", "help"},
		{"create", "-f", "raw", "-o", "help", target, "1M"},
		{"create", "-f", "qcow2", "-o", "?", target, "1M"},
		{"create", "-f", "qcow2", "-o", "backing_file=x,", "-o", "help", target, "1M"},
		{"create", "-f", "qcow2", "-o", ",help", target, "1M"},
		{"create", "-f", "qcow2", "-o", ",,", "-o", "help", target, "1M"},
		{"create", "-f", "qcow2", "-o", "", target, "1M"},
		{"create", "-f", "bochs", "-o", "help"},
		{"convert", "-O", "qcow2", "-o", "help"},
		{"convert", "-O", "raw", "-o", "help", "a", target},
		{"convert", "-O", "qcow2", "-o", "help", "a", target},
		{"convert", "-O", "qcow2", "-o", "x,", "-o", "help", "a", target},
		{"convert", "-O", "bochs", "-o", "help"},
		{"measure", "-O", "qcow2", "-o", ",", "--size", "1M"},
		{"amend", "-f", "qcow2", "-o", "help"},
		{"amend", "-f", "qcow2", "-o", "cluster_size=4k,?", img},
		{"amend", "-o", "help", img},
		{"amend", "-f", "raw", "-o", "help"},
		{"amend", "-f", "bochs", "-o", "help"},
		{"amend", "-f", "foo", "-o", "help"},
		{"amend", "-f", "qcow2", "-o", "backing_file=x,", "-o", "help", img},
		{"create", "-f", "bogus", "-o", "help"},
		{"create", "-f", "bochs", "nbd://example.com", "64M"},
		{"create", "-f", "bochs", target, "64M"},
		{"create", "-f", "bogus", target, "64M"},
		{"convert", "-O", "bochs", target, target},
		{"create", "-f", "qcow2", "-o", "help=on"},
	} {
		cmd := exec.Command("qemu-img", args...)
		want, _ := cmd.CombinedOutput()
		wantCode := cmd.ProcessState.ExitCode()
		var out bytes.Buffer
		code := runImg(args, &out, &out)
		if got := out.String(); code != wantCode || got != string(want) {
			t.Errorf("%q: exit %d:\n%s\nqemu-img: exit %d:\n%s", args, code, got, wantCode, want)
		}
		if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 0 {
			t.Fatalf("%q created %v", args, m)
		}
		if after, _ := os.ReadFile(img); !bytes.Equal(after, before) {
			t.Fatalf("%q changed the image", args)
		}
	}
}

// TestCreateEncryptionRefused: the encryption options are read and refused
// as qemu-img refuses them (same "Formatting" line, message and exit code,
// no image left), and where qemu-img would make an encrypted image minivmm
// refuses with QEMU's words and leaves none; encryption=off is no
// encryption.
func TestCreateEncryptionRefused(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		opts   string
		differ bool // qemu-img makes an encrypted image here
	}{
		{"encrypt.format=foo", false},
		{"encryption=on,encrypt.format=luks", false},
		{"encryption=on,encrypt.key-secret=nope", false},
		{"encryption=on", false},
		{"encrypt.format=luks", false},
		{"encrypt.iter-time=abc", false},
		{"encrypt.iter-time=10", false},
		{"encrypt.cipher-alg=aes-256,encrypt.hash-alg=sha256", false},
		{"encryption=bogus", false},
		{"encryption=off", false},
		{"encryption=off,encrypt.format=luks,encrypt.key-secret=sec1", false},
		{"encrypt.format=luks,encrypt.key-secret=sec0", true},
	} {
		name := filepath.Join(dir, "e.qcow2")
		args := []string{"create", "-f", "qcow2", "--object", "secret,id=sec0,data=1", "-o", tc.opts, name, "1M"}
		cmd := exec.Command("qemu-img", args...)
		want, _ := cmd.CombinedOutput()
		wantCode := cmd.ProcessState.ExitCode()
		_, err := os.Stat(name)
		wantExists := err == nil
		os.Remove(name)
		var out bytes.Buffer
		code := runImg(args, &out, &out)
		_, err = os.Stat(name)
		exists := err == nil
		os.Remove(name)
		got := out.String()
		if tc.differ {
			line, _, _ := strings.Cut(string(want), "\n")
			wantRefusal := line + "\nqemu-img: " + name + ": Crypto format not supported in qcow2\n"
			if code != 1 || got != wantRefusal || exists {
				t.Errorf("%s: exit %d, image left %v:\n%s\nwant exit 1, no image:\n%s", tc.opts, code, exists, got, wantRefusal)
			}
			continue
		}
		if code != wantCode || got != string(want) || exists != wantExists {
			t.Errorf("%s: exit %d, image %v:\n%s\nqemu-img: exit %d, image %v:\n%s", tc.opts, code, exists, got, wantCode, wantExists, want)
		}
	}
	// convert -o reads them as create does; where qemu-img would
	// encrypt, no image is left either.
	src := filepath.Join(dir, "src.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", src, "1M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, tc := range []struct {
		opts   string
		differ bool
	}{
		{"encrypt.format=luks", false},
		{"encryption=off", false},
		{"encrypt.iter-time=10", false},
		{"encrypt.format=luks,encrypt.key-secret=sec0", true},
	} {
		name := filepath.Join(dir, "c.qcow2")
		args := []string{"convert", "-O", "qcow2", "--object", "secret,id=sec0,data=1", "-o", tc.opts, src, name}
		cmd := exec.Command("qemu-img", args...)
		want, _ := cmd.CombinedOutput()
		_, err := os.Stat(name)
		wantExists := err == nil
		os.Remove(name)
		var out bytes.Buffer
		code := runImg(args, &out, &out)
		_, err = os.Stat(name)
		exists := err == nil
		os.Remove(name)
		if tc.differ {
			wantRefusal := "qemu-img: " + name + ": error while converting qcow2: Crypto format not supported in qcow2\n"
			if code != 1 || out.String() != wantRefusal || exists {
				t.Errorf("convert %s: exit %d, image left %v:\n%s", tc.opts, code, exists, out.String())
			}
			continue
		}
		if code != cmd.ProcessState.ExitCode() || out.String() != string(want) || exists != wantExists {
			t.Errorf("convert %s: exit %d, image %v:\n%s\nqemu-img: exit %d, image %v:\n%s", tc.opts, code, exists, out.String(), cmd.ProcessState.ExitCode(), wantExists, want)
		}
	}
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
