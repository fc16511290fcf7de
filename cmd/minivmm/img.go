package main

// minivmm img: qemu-img over minivmm's block layer. Each subcommand lives
// in its own img_*.go file and registers itself here, with qemu-img's
// syntax, output and exit codes.

import (
	"fmt"
	"io"
	"maps"
	"slices"
)

// imgProg names the tool in its messages, as qemu-img's argv[0] does.
const imgProg = "qemu-img"

// imgCommand is one `minivmm img` subcommand: it gets the arguments after
// its name and returns the exit status.
type imgCommand struct {
	run   func(args []string, stdout, stderr io.Writer) int
	usage string // one line: "info [-f fmt] [--output=ofmt] [--backing-chain] filename"
}

// imgCommands is filled by the img_*.go files' init functions.
var imgCommands = map[string]imgCommand{}

func runImg(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(stdout, "usage: minivmm img [command] [command options]\n\nCommand syntax:\n")
		for _, name := range slices.Sorted(maps.Keys(imgCommands)) {
			fmt.Fprintf(stdout, "  %s\n", imgCommands[name].usage)
		}
		if len(args) == 0 {
			fmt.Fprintf(stderr, "%s: Not enough arguments\nTry 'qemu-img --help' for more information\n", imgProg)
			return 1
		}
		return 0
	}
	cmd, ok := imgCommands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "%s: Command not found: %s\n", imgProg, args[0])
		return 1
	}
	return cmd.run(args[1:], stdout, stderr)
}
