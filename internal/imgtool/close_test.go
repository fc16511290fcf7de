package imgtool

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/faultdisk"
	"minivmm/internal/qtool"
)

// TestImgCloseError: what fails at close reaches the exit status, with a
// message, for commands that read and that write.
func TestImgCloseError(t *testing.T) {
	t.Parallel()
	prog := qtool.Program{Name: "qemu-img", Version: "test", Setup: func(g *block.Graph) error {
		return g.AddDriver(faultdisk.CloseFailing("imgtestclosefail", unix.EIO))
	}}
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
		code := Run(prog, args, &out, &errb)
		if code != 1 || errb.String() != "qemu-img: Failed to close the image: Input/output error\n" {
			t.Errorf("%q: exit %d, stderr %q", args, code, errb.String())
		}
	}
}
