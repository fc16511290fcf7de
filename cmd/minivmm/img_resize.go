package main

// minivmm img resize: qemu-img resize over minivmm's block layer. raw
// images grow and (with --shrink) shrink through Node.Truncate; qcow2
// images resize through the same call once its driver supports writing
// (until then opening one read-write fails with the driver's message).

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"minivmm/block"
	"minivmm/cmdline"
)

func init() {
	imgCommands["resize"] = imgCommand{run: runImgResize,
		usage: "resize [-f fmt] [--shrink] [-q] [-add-fd fd=N,set=M] filename [+ | -]size"}
}

const imgShrinkHint = "%s: Use the --shrink option to perform a shrink operation.\n" +
	"%s: warning: Shrinking an image will delete all data beyond the shrunken image's end. " +
	"Before performing such an operation, make sure there is no important data there.\n"

func runImgResize(args []string, stdout, stderr io.Writer) int {
	// As qemu-img: a last argument starting with '-' is the size
	// ("-1G"), taken out before the options are parsed.
	var sizeArg string
	haveSize := false
	if len(args) >= 2 && strings.HasPrefix(args[len(args)-1], "-") && args[len(args)-1] != "--" {
		sizeArg, haveSize = args[len(args)-1], true
		args = args[:len(args)-1]
	}
	g := &getopt{
		prog: imgProg, args: args, short: "f:hq", stderr: stderr,
		long: []longOption{{"help", false, 'h'}, {"shrink", false, 'S'}, {"add-fd", true, 'A'}},
		dash: []longOption{{"add-fd", true, 'A'}},
	}
	var format string
	var addFds []cmdline.Occurrence
	quiet, shrink := false, false
	for done := false; !done; {
		c, arg := g.next()
		switch c {
		case 0:
			done = true
		case '?':
			return imgTryHelp(stderr)
		case 'h':
			fmt.Fprintf(stdout, "usage: minivmm img %s\n", imgCommands["resize"].usage)
			return 0
		case 'f':
			format = arg
		case 'q':
			quiet = true
		case 'S':
			shrink = true
		case 'A':
			addFds = append(addFds, cmdline.Occurrence{Name: "add-fd", Value: arg})
		}
	}
	ops := g.operands
	if !haveSize && len(ops) == 2 {
		sizeArg, haveSize = ops[1], true
		ops = ops[:1]
	}
	if !haveSize || len(ops) != 1 {
		fmt.Fprintf(stderr, "%s: Expecting image file name and size\n", imgProg)
		return imgTryHelp(stderr)
	}
	filename := ops[0]
	rel := 0
	num := sizeArg
	switch {
	case strings.HasPrefix(num, "+"):
		rel, num = 1, num[1:]
	case strings.HasPrefix(num, "-"):
		rel, num = -1, num[1:]
	}
	n, err := cmdline.ParseSize(num)
	if err != nil {
		fmt.Fprintf(stderr, "%s: Parameter 'size' expects a non-negative number below 2^64\n"+
			"Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"+
			"and exabytes, respectively.\n", imgProg)
		return 1
	}

	s, ok := newImgSession(addFds, stderr)
	if !ok {
		return 1
	}
	defer s.close()
	node, err := s.open(&ioOptions{file: filename, haveFile: true, format: format, unmap: true})
	if err != nil {
		fmt.Fprintf(stderr, "%s: Could not open '%s': %s\n", imgProg, filename, message(err))
		return 1
	}
	cur := node.Length()
	var size int64
	switch {
	case rel > 0:
		size = cur + int64(n)
	case rel < 0:
		size = cur - int64(n)
	default:
		size = int64(n)
	}
	if n > 1<<62 || size < 0 || (rel > 0 && size < cur) {
		fmt.Fprintf(stderr, "%s: New image size must be positive.\n", imgProg)
		return 1
	}
	if size < cur && !shrink {
		fmt.Fprintf(stderr, imgShrinkHint, imgProg, imgProg)
		return 1
	}
	err = node.Truncate(size)
	if errors.Is(err, block.ErrNotSupported) && node.Driver() == "raw" && node.Child("file") != nil {
		// The raw format driver has no Truncate of its own (yet): a
		// raw image is its file, so resize that.
		err = node.Child("file").Truncate(size)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", imgProg, message(err))
		return 1
	}
	if err := node.Flush(); err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", imgProg, message(err))
		return 1
	}
	if !quiet {
		fmt.Fprintln(stdout, "Image resized.")
	}
	return 0
}
