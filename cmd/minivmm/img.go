package main

import (
	"io"

	"minivmm/internal/imgtool"
	"minivmm/internal/qtool"
	"minivmm/monitor"
)

// runImg is `minivmm img`: qemu-img, naming itself as it was run.
func runImg(args []string, stdout, stderr io.Writer) int {
	return imgtool.Run(qtool.Program{Name: "minivmm img", Version: monitor.MinivmmVersion}, args, stdout, stderr)
}
