package imgtool

// minivmm img dd: qemu-img dd, with qemu-img 7.2's operands (if, of, bs,
// count, skip), options and quirks: count counts from the start of the
// input, skipped blocks included, as qemu-img 7.2's does; a skip past
// the end creates an empty output (with a message, exit 0).

import (
	"fmt"
	"math"
	"strings"

	"minivmm/internal/qtool"
)

func init() {
	imgCommands["dd"] = imgCommand{run: runImgDd,
		usage: "dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [-add-fd fd=N,set=M] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output"}
}

// ddArgs is what dd's operands say.
type ddArgs struct {
	in, out           string
	bs, count, skip   int64
	hasCount, hasSkip bool
	hasIn, hasOut     bool
}

// parseDd reads dd's operands, printing qemu-img's errors.
func (e *env) parseDd(operands []string) (ddArgs, bool) {
	d := ddArgs{bs: 512}
	for _, op := range operands {
		key, val, ok := strings.Cut(op, "=")
		if !ok {
			fmt.Fprintf(e.stderr, "%s: unrecognized operand %s\n", e.prog, op)
			return d, false
		}
		switch key {
		case "bs":
			n, ok := e.cvtnum("bs", val)
			if !ok {
				return d, false
			}
			if n < 1 || n > math.MaxInt32 {
				fmt.Fprintf(e.stderr, "%s: Invalid bs specified. Must be between 1 and 2147483647.\n", e.prog)
				return d, false
			}
			d.bs = n
		case "count":
			if d.count, ok = e.cvtnum("count", val); !ok {
				return d, false
			}
			d.hasCount = true
		case "skip":
			if d.skip, ok = e.cvtnum("skip", val); !ok {
				return d, false
			}
			d.hasSkip = true
		case "if":
			d.in, d.hasIn = val, true
		case "of":
			d.out, d.hasOut = val, true
		default:
			fmt.Fprintf(e.stderr, "%s: unrecognized operand %s\n", e.prog, key)
			return d, false
		}
	}
	if !d.hasIn || !d.hasOut {
		fmt.Fprintf(e.stderr, "%s: Must specify both input and output files\n", e.prog)
		return d, false
	}
	return d, true
}

func runImgDd(e *env, args []string) int {
	var format string
	outFmt := "raw"
	var imageOpts, forceShare bool
	a, rc, ok := e.getopt(args, "f:O:U", []qtool.LongOption{
		qtool.Opt("image-opts", false, 'I'), qtool.Opt("force-share", false, 'U'),
	}, func(c rune, arg string) bool {
		switch c {
		case 'f':
			format = arg
		case 'O':
			outFmt = arg
		case 'I':
			imageOpts = true
		case 'U':
			forceShare = true
		case 'j':
			return e.object(arg)
		}
		return true
	})
	if !ok {
		return rc
	}
	d, ok := e.parseDd(a.operands)
	if !ok {
		return 1
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(e.stderr, "%s: "+format+"\n", append([]any{e.prog}, a...)...)
		return 1
	}
	s, ok := e.newSession(a.addFds)
	if !ok {
		return 1
	}
	defer s.close()
	src, err := s.open(&qtool.OpenFlags{File: d.in, Format: format, ImageOpts: imageOpts, ReadOnly: true, ForceShare: forceShare})
	if err != nil {
		return fail("Could not open '%s': %s", d.in, qtool.Message(err))
	}
	if _, ok := createKinds[outFmt]; !ok {
		return fail("Unknown file format")
	}
	size := src.Length()
	if d.hasCount && d.count <= math.MaxInt64/d.bs && d.count*d.bs < size {
		size = d.count * d.bs
	}
	beyond := d.hasSkip && (d.skip > math.MaxInt64/d.bs || size < d.skip*d.bs)
	outSize := int64(0)
	if !beyond {
		outSize = size - d.skip*d.bs
	}
	if err := imgCreateImage(s.reg, nil, d.out, outFmt, nil, uint64(outSize), "", ""); err != nil {
		return fail("%s: error while creating output image: %s", d.out, strings.TrimPrefix(err.Error(), d.out+": "))
	}
	dst, err := s.open(&qtool.OpenFlags{File: d.out, Format: outFmt})
	if err != nil {
		return fail("Could not open '%s': %s", d.out, qtool.Message(err))
	}
	inPos := d.skip * d.bs
	if beyond {
		fmt.Fprintf(e.stderr, "%s: %s: cannot skip to specified offset\n", e.prog, d.in)
		inPos = size
	}
	buf := make([]byte, d.bs)
	for outPos := int64(0); inPos < size; {
		n := min(d.bs, size-inPos)
		if _, err := src.ReadAt(buf[:n], inPos); err != nil {
			return fail("error while reading from input image file: %s", qtool.Strerror(err))
		}
		if _, err := dst.WriteAt(buf[:n], outPos); err != nil {
			return fail("error while writing to output image file: %s", qtool.Strerror(err))
		}
		inPos, outPos = inPos+n, outPos+n
	}
	return 0
}
