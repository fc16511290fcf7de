package qtool

import (
	"fmt"
	"io"

	"minivmm/block"
)

// QEMUVersion is the version of qemu-img and qemu-io whose syntax, output
// and exit codes the tools follow.
const QEMUVersion = "7.2.0"

// Program is how a tool was run: the name its messages start with (QEMU's
// tools use their argv[0]: "minivmm img" here, "qemu-img" in tests that
// compare with the real one) and minivmm's version.
type Program struct {
	Name    string
	Version string
	// Setup, if set, is called with the tool's graph before anything is
	// opened in it: tests install their own drivers there (a
	// fault-injecting disk), for the tool to run as it does for users.
	Setup func(*block.Graph) error
}

// PrintVersion answers --version as QEMU's tools do ("qemu-img version
// 7.2.22 (Debian ...)"): the QEMU version spoken where theirs is, so that
// scripts parsing it see what to expect, and minivmm's own in parentheses,
// where QEMU names its package.
func (p Program) PrintVersion(w io.Writer) {
	fmt.Fprintf(w, "%s version %s (minivmm %s)\n", p.Name, QEMUVersion, p.Version)
}
