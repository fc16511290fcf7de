package main

import (
	"io"
	"os"

	"minivmm/internal/runtool"
)

// runRun is `minivmm run [IMAGE...]`: the product's job on embedded
// defaults (see runtool).
func runRun(args []string, stdout, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	return runtool.Run(args, runtool.Config{Self: self, Stdout: stdout, Stderr: stderr, TTY: isTTY(os.Stderr)})
}
