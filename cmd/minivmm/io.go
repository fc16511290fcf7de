package main

import (
	"io"

	"minivmm/internal/iotool"
	"minivmm/internal/qtool"
	"minivmm/monitor"
)

// runIO is `minivmm io`: qemu-io, naming itself as it was run.
func runIO(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return iotool.Run(qtool.Program{Name: "minivmm io", Version: monitor.MinivmmVersion}, args, stdin, stdout, stderr)
}
