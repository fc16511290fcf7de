package imgtool

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
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
			Name: "imgtestclosefail", Format: true,
			Open: func(o *block.OpenContext) (block.Image, error) {
				return &failingCloser{file: o.Child("file")}, nil
			},
		})
	})
}

// TestImgCloseError: what fails at close reaches the exit status, with a
// message, for commands that read and that write.
func TestImgCloseError(t *testing.T) {
	t.Parallel()
	registerCloseFail()
	img := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"info", "-f", "imgtestclosefail", img},
		{"bench", "-w", "-c", "4", "-f", "imgtestclosefail", img},
		{"compare", "-f", "imgtestclosefail", "-F", "raw", img, img},
	} {
		var out, errb bytes.Buffer
		code := runImg(args, &out, &errb)
		if code != 1 || errb.String() != "qemu-img: Failed to close the image: Input/output error\n" {
			t.Errorf("%q: exit %d, stderr %q", args, code, errb.String())
		}
	}
}
