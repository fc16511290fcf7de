package main

import (
	"io"

	"minivmm/internal/imgtool"
	"minivmm/internal/qtool"
)

// minivmmVersion is what `img --version` and `io -V` report as minivmm's
// own version, beside the QEMU version the tools speak.
const minivmmVersion = "0.1.0"

// runImg is `minivmm img`: qemu-img, naming itself as it was run.
func runImg(args []string, stdout, stderr io.Writer) int {
	return imgtool.Run(qtool.Program{Name: "minivmm img", Version: minivmmVersion}, args, stdout, stderr)
}
