package qcow2

import (
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"

	"minivmm/block"
)

// TestCheckOpensAsOpen: Check refuses the headers open refuses, in the
// same words, as qemu-img check does: backing file names that are too
// long or cross the end of the header cluster.
func TestCheckOpensAsOpen(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*testImage)
		want   string
	}{
		{"name length 0xffffffff", func(i *testImage) { i.bname = "base"; i.h.BackingFileSize = 0xffffffff }, "Backing file name too long"},
		{"name of 1024 bytes", func(i *testImage) { i.bname = strings.Repeat("b", 1024) }, "Backing file name too long"},
		{"name crossing the header cluster", func(i *testImage) {
			i.bname = strings.Repeat("b", 100)
			i.h.BackingFileOffset = uint64(i.cs() - 50)
		}, "Backing file name too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := newTestImage(12, 1<<20)
			tc.mutate(img)
			path := img.write(t)
			g := fixture(t)
			f, err := g.Add(block.Options{"driver": "file", "filename": path})
			if err != nil {
				t.Fatal(err)
			}
			_, err = Check(f, io.Discard)
			var oe *CheckOpenError
			if !errors.As(err, &oe) || oe.Err.Error() != tc.want {
				t.Errorf("Check: %v; want an open error %q", err, tc.want)
			}
			if _, err := openQcow2(g, path, block.Options{"backing": nil}); err == nil || err.Error() != tc.want {
				t.Errorf("open: %v; want %q", err, tc.want)
			}
			if _, err := exec.LookPath("qemu-img"); err != nil {
				return
			}
			out, err := exec.Command("qemu-img", "check", "-f", "qcow2", path).CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("qemu-img check: %v %s; want %q", err, out, tc.want)
			}
		})
	}
}
