package iotool

import (
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/internal/qtool"
)

// failingCloser is a format over its file child whose write-back at
// close fails with EIO (as qcow2's lazy refcount write-back can).
type failingCloser struct{ file *block.Node }

func (f *failingCloser) ReadAt(p []byte, off int64) (int, error)  { return f.file.ReadAt(p, off) }
func (f *failingCloser) WriteAt(p []byte, off int64) (int, error) { return f.file.WriteAt(p, off) }
func (f *failingCloser) Flush() error                             { return f.file.Flush() }
func (f *failingCloser) Length() (int64, error)                   { return f.file.Length(), nil }
func (f *failingCloser) Close() error                             { return unix.EIO }

var closeFailOnce sync.Once

func registerCloseFail() {
	closeFailOnce.Do(func() {
		block.Register(&block.Driver{
			Name: "iotestclosefail", Format: true,
			Open: func(o *block.OpenContext) (block.Image, error) {
				return &failingCloser{file: o.Child("file")}, nil
			},
		})
	})
}

// TestIOCloseError: what fails at close reaches the exit status, with a
// message, where qemu-io would print it and exit 0.
func TestIOCloseError(t *testing.T) {
	t.Parallel()
	registerCloseFail()
	img := testImage(t, 1<<20, nil)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-f", "iotestclosefail", "-c", "write 0 512", img},
			"qemu-io: Failed to close the image: Input/output error\n"},
		{[]string{"-r", "-f", "iotestclosefail", "-c", "read 0 512", img},
			"qemu-io: Failed to close the image: Input/output error\n"},
	} {
		out, errOut, code := ioRun(tc.args, "")
		if code != 1 || errOut != tc.want || !strings.Contains(out, "512/512 bytes") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q, want %q", tc.args, code, out, errOut, tc.want)
		}
	}
}

// TestIOVersion: -V answers at once, whatever follows (qemu-io exits in
// its option loop), with the QEMU version spoken and minivmm's own.
func TestIOVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-V"}, {"--version", "--bogus"}, {"-f", "raw", "-V", "-c"}} {
		var out, errb strings.Builder
		code := Run(qtool.Program{Name: "minivmm io", Version: "1.2.3"}, args, strings.NewReader(""), &out, &errb)
		if want := "minivmm io version " + qtool.QEMUVersion + " (minivmm 1.2.3)\n"; code != 0 || out.String() != want || errb.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
}
