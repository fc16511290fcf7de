package iotool

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/faultdisk"
	"minivmm/internal/qtool"
)

// TestIOCloseError: what fails at close reaches the exit status, with a
// message, where qemu-io would print it and exit 0.
func TestIOCloseError(t *testing.T) {
	t.Parallel()
	prog := qtool.Program{Name: "qemu-io", Version: "test", Setup: func(g *block.Graph) error {
		return g.AddDriver(faultdisk.CloseFailing("iotestclosefail", unix.EIO))
	}}
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
		var outb, errb strings.Builder
		code := Run(prog, tc.args, strings.NewReader(""), &outb, &errb)
		out, errOut := outb.String(), errb.String()
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
