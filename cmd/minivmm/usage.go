package main

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"minivmm/cmdline"
	"minivmm/monitor"
)

// printUsage is -h: what minivmm is, its subcommands, and every option
// the VMM takes, laid out as QEMU's -h lays out its own.
func printUsage(w io.Writer, fs *cmdline.FlagSet) {
	fmt.Fprintf(w, `usage: minivmm [options]
       minivmm img command [command options]   qemu-img's commands ('minivmm img --help')
       minivmm io [options] [file]             qemu-io ('minivmm io --help')

minivmm is a virtual machine monitor that speaks QEMU %s's QMP and
command line. It runs no guest CPUs; its block layer (raw, qcow2, backing
chains, live reopen) is real, and every file it opens goes through
QEMU-style fd sets, so a management layer can run it confined.

Options:
-h or -help     display this help and exit
`, monitor.QEMUVersion())
	fs.PFlags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "h" || f.Name == "help" {
			return
		}
		left := "-" + f.Name
		if arg := f.Annotations[argAnnotation]; len(arg) > 0 {
			left += " " + arg[0]
		}
		usage := f.Usage
		if len(left) < 16 {
			fmt.Fprintf(w, "%-16s%s\n", left, usage)
		} else {
			fmt.Fprintf(w, "%s\n%16s%s\n", left, "", usage)
		}
	})
	fmt.Fprint(w, `
Options also take two dashes (--name x, --name=x).
With no -qmp, -mon or -monitor, a QMP monitor listens on
$XDG_RUNTIME_DIR/minivmm-PID.qmp ($TMPDIR, else /tmp, when
XDG_RUNTIME_DIR is unset) and minivmm prints the path.
`)
}

// printVersion is -version: minivmm's version and the QEMU it speaks.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "%s\nspeaks the QMP and command line of QEMU %s\n", monitor.Package(), monitor.QEMUVersion())
}
