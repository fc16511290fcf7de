package engine

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"minivmm/block"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// needQemuIO skips without qemu-img and qemu-io, except under CI=true.
func needQemuIO(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (CI=true)", tool)
			}
			t.Skipf("%s not installed; apt-get install qemu-utils", tool)
		}
	}
}

func qemu(t *testing.T, dir, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return out
}

// TestRebasePastOldBackingEOF: the engine the live jobs use keeps what
// the overlay reads past the old backing chain's end (zeroes) when the
// new backing file is longer, with or without the new backing file in
// the old chain (prefix). qemu-io reads every byte of the overlay the
// same over the old chain before and over the new one after.
func TestRebasePastOldBackingEOF(t *testing.T) {
	needQemuIO(t)
	fdtest.Check(t)
	for _, tc := range []struct {
		name     string
		oldOnNew bool // base_old's backing file is base_new
	}{
		{"prefix", true},
		{"unrelated", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "base_new.qcow2", "320k")
			qemu(t, dir, "qemu-io", "-c", "write -P 0x11 0 320k", "base_new.qcow2")
			oldArgs := []string{"create", "-q", "-f", "qcow2"}
			if tc.oldOnNew {
				oldArgs = append(oldArgs, "-b", "base_new.qcow2", "-F", "qcow2")
			}
			qemu(t, dir, "qemu-img", append(oldArgs, "base_old.qcow2", "256k")...)
			qemu(t, dir, "qemu-io", "-c", "write -P 0x22 0 256k", "base_old.qcow2")
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base_old.qcow2", "-F", "qcow2", "ov.qcow2", "320k")
			readAll := func() []byte {
				return qemu(t, dir, "qemu-io", "-r", "-c", "read -v 0 320k", "ov.qcow2")
			}
			before := readAll()

			reg := qemuopen.New(qemuopen.Config{})
			g := block.NewGraph(reg)
			file := func(name string) block.Options {
				return block.Options{"driver": "file", "filename": filepath.Join(dir, name)}
			}
			ov, err := g.Add(block.Options{"driver": "qcow2", "file": file("ov.qcow2")})
			if err != nil {
				t.Fatal(err)
			}
			newB, err := g.Add(block.Options{"driver": "qcow2", "read-only": true, "file": file("base_new.qcow2")})
			if err != nil {
				t.Fatal(err)
			}
			w, err := g.Attach("", ov, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			oldB := ov.Child("backing")
			var prefix *block.Node
			if tc.oldOnNew {
				prefix = oldB.Child("backing")
			}
			if err := Rebase(context.Background(), ov, oldB, newB, prefix, Options{}); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 16)
			if _, err := ov.ReadAt(got, 256<<10); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, make([]byte, 16)) {
				t.Errorf("at 256k after the rebase: % x, want zeroes", got)
			}
			g.Detach(w)
			g.Close()
			reg.CloseAll()

			qemu(t, dir, "qemu-img", "rebase", "-u", "-b", "base_new.qcow2", "-F", "qcow2", "ov.qcow2")
			if after := readAll(); string(dropTiming(after)) != string(dropTiming(before)) {
				t.Errorf("qemu-io reads differ after the rebase:\n%s", firstDiff(before, after))
			}
			qemu(t, dir, "qemu-img", "check", "ov.qcow2")
		})
	}
}

// dropTiming removes qemu-io's timing line.
func dropTiming(out []byte) []byte {
	var keep [][]byte
	for _, l := range bytes.Split(out, []byte("\n")) {
		if !bytes.Contains(l, []byte(" sec (")) {
			keep = append(keep, l)
		}
	}
	return bytes.Join(keep, []byte("\n"))
}

func firstDiff(a, b []byte) string {
	al, bl := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := range min(len(al), len(bl)) {
		if !bytes.Equal(al[i], bl[i]) {
			return string(al[i]) + "\n" + string(bl[i])
		}
	}
	return "(lengths differ)"
}
