package imgtool

// minivmm img resize: qemu-img resize over minivmm's block layer. raw
// images grow and (with --shrink) shrink through Node.Truncate; qcow2
// images resize through the same call once its driver supports writing
// (until then opening one read-write fails with the driver's message).

import (
	"errors"
	"fmt"
	"strings"

	"minivmm/block"
	"minivmm/cmdline"
	"minivmm/internal/qtool"
)

func init() {
	imgCommands["resize"] = imgCommand{run: runImgResize,
		usage: "resize [-f fmt] [--preallocation=prealloc] [--shrink] [-q] [-add-fd fd=N,set=M] filename [+ | -]size"}
}

const imgShrinkHint = "%s: Use the --shrink option to perform a shrink operation.\n" +
	"%s: warning: Shrinking an image will delete all data beyond the shrunken image's end. " +
	"Before performing such an operation, make sure there is no important data there.\n"

func runImgResize(e *env, args []string) int {
	stdout, stderr := e.stdout, e.stderr
	// As qemu-img, the last argument is the size, taken out before the
	// options are parsed so that "-1G" is not read as an option.
	if len(args) < 2 {
		fmt.Fprintf(stderr, "%s: Not enough arguments\n", e.prog)
		return e.tryHelp()
	}
	sizeArg := args[len(args)-1]
	args = args[:len(args)-1]
	var format string
	prealloc := "off"
	quiet, shrink, imageOpts := false, false, false
	a, rc, ok := e.getopt(args, "f:q", []qtool.LongOption{qtool.Opt("shrink", false, 'S'), qtool.Opt("image-opts", false, 'I'),
		qtool.Opt("preallocation", true, 'P')}, func(c rune, arg string) bool {
		switch c {
		case 'P':
			switch arg {
			case "off", "metadata", "falloc", "full":
				prealloc = arg
			default:
				fmt.Fprintf(stderr, "%s: Invalid preallocation mode '%s'\n", e.prog, arg)
				return false
			}
		case 'I':
			imageOpts = true
		case 'f':
			format = arg
		case 'q':
			quiet = true
		case 'S':
			shrink = true
		}
		return true
	})
	if !ok {
		return rc
	}
	ops := a.operands
	if len(ops) != 1 {
		fmt.Fprintf(stderr, "%s: Expecting image file name and size\n", e.prog)
		return e.tryHelp()
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
			"and exabytes, respectively.\n", e.prog)
		return 1
	}

	s, ok := e.newSession(a.addFds)
	if !ok {
		return 1
	}
	defer s.close()
	node, err := s.open(&qtool.OpenFlags{File: filename, Format: format, Unmap: true, ImageOpts: imageOpts})
	if err != nil {
		fmt.Fprintf(stderr, "%s: Could not open '%s': %s\n", e.prog, filename, qtool.Message(err))
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
		fmt.Fprintf(stderr, "%s: New image size must be positive.\n", e.prog)
		return 1
	}
	if size < cur && !shrink {
		fmt.Fprintf(stderr, imgShrinkHint, e.prog, e.prog)
		return 1
	}
	if size < cur && prealloc != "off" {
		fmt.Fprintf(stderr, "%s: Preallocation can only be used for growing images\n", e.prog)
		return 1
	}
	if prealloc != "off" && node.Driver() != "raw" {
		// qemu-img preallocates the new area of a qcow2 image too;
		// minivmm's qcow2 driver has no preallocating resize yet.
		fmt.Fprintf(stderr, "%s: Unsupported preallocation mode: %s\n", e.prog, prealloc)
		return 1
	}
	if prealloc == "metadata" {
		fmt.Fprintf(stderr, "%s: Unsupported preallocation mode: %s\n", e.prog, prealloc)
		return 1
	}
	err = node.Truncate(size)
	if errors.Is(err, block.ErrNotSupported) && node.Driver() == "raw" && node.Child("file") != nil {
		// The raw format driver has no Truncate of its own (yet): a
		// raw image is its file, so resize that.
		err = node.Child("file").Truncate(size)
	}
	if err == nil && size > cur && prealloc != "off" {
		err = preallocate(node, cur, size, prealloc)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", e.prog, qtool.Message(err))
		return 1
	}
	if err := node.Flush(); err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", e.prog, qtool.Message(err))
		return 1
	}
	if !quiet {
		fmt.Fprintln(stdout, "Image resized.")
	}
	return 0
}

// preallocate allocates [from, to) of a raw image's file, as QEMU's file
// driver does when it grows with preallocation: falloc reserves the
// blocks (zeroes, allocated), full writes zeroes.
func preallocate(node *block.Node, from, to int64, mode string) error {
	f := node
	if c := node.Child("file"); c != nil {
		f = c
	}
	if mode == "falloc" {
		return f.WriteZeroes(from, to-from, false)
	}
	zero := make([]byte, min(to-from, 1<<20))
	for off := from; off < to; off += int64(len(zero)) {
		n := min(int64(len(zero)), to-off)
		if _, err := f.WriteAt(zero[:n], off); err != nil {
			return err
		}
	}
	return nil
}
