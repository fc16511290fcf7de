package imgtool

// minivmm img measure: qemu-img measure, the file size an image would
// take, for --size or an input image (raw or qcow2 output; qcow2's
// arithmetic is block/qcow2's, QEMU's formulas).

import (
	"errors"
	"fmt"
	"strings"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/cmdline"
	"minivmm/internal/qtool"
)

func init() {
	imgCommands["measure"] = imgCommand{run: runImgMeasure,
		usage: "measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef] [--image-opts] [-f fmt] [-l snapshot_param] [-U] filename]"}
}

// measureInfo is QEMU's BlockMeasureInfo.
type measureInfo struct {
	required, fullyAllocated int64
	hasBitmaps               bool
}

func runImgMeasure(e *env, args []string) int {
	var format, output = "", "human"
	outFmt := "raw"
	var optStrs []string
	var imageOpts, forceShare bool
	var snap *convertSnapshot
	size := int64(-1)
	a, rc, ok := e.getopt(args, "f:O:o:l:U", []qtool.LongOption{
		qtool.Opt("image-opts", false, 'I'), qtool.Opt("force-share", false, 'U'),
		qtool.Opt("output", true, 'P'), qtool.Opt("size", true, 's'),
	}, func(c rune, arg string) bool {
		switch c {
		case 'f':
			format = arg
		case 'O':
			outFmt = arg
		case 'o':
			return e.accumulateOption(&optStrs, arg)
		case 'l':
			var ok bool
			snap, ok = e.parseConvertSnapshot(arg)
			return ok
		case 'I':
			imageOpts = true
		case 'U':
			forceShare = true
		case 'j':
			return e.object(arg)
		case 'P':
			if arg != "human" && arg != "json" {
				fmt.Fprintf(e.stderr, "%s: --output must be used with human or json as argument.\n", e.prog)
				return false
			}
			output = arg
		case 's':
			var ok bool
			size, ok = e.cvtnum("image size", arg)
			return ok
		}
		return true
	})
	if !ok {
		return rc
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(e.stderr, "%s: "+format+"\n", append([]any{e.prog}, a...)...)
		return 1
	}
	if len(a.operands) > 1 {
		return fail("At most one filename argument is allowed.")
	}
	filename := ""
	if len(a.operands) == 1 {
		filename = a.operands[0]
	}
	if filename != "" && size >= 0 {
		return fail("--size N cannot be used together with a filename.")
	}
	if filename == "" && size < 0 {
		return fail("Either --size N or one filename must be specified.")
	}
	s, ok := e.newSession(a.addFds)
	if !ok {
		return 1
	}
	defer s.close()
	var in *block.Node
	if filename != "" {
		n, err := s.open(&qtool.OpenFlags{File: filename, Format: format, ImageOpts: imageOpts, ReadOnly: true, ForceShare: forceShare})
		if err != nil {
			return fail("Could not open '%s': %s", filename, qtool.Message(err))
		}
		if snap != nil {
			if err := snap.load(n); err != nil {
				return fail("Failed to load snapshot: %s", err)
			}
		}
		in = n
	}
	kinds, ok := createKinds[outFmt]
	if !ok {
		return fail("Unknown file format '%s'", outFmt)
	}
	opts, err := cmdline.ParseOpts(strings.Join(optStrs, ","), "")
	if err == nil {
		err = opts.Validate(kinds)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "%s: %v\n", e.prog, err)
		return fail("Invalid options for file format '%s'", outFmt)
	}
	if size < 0 {
		if v, err := opts.Size("size", 0); err == nil {
			size = int64(v)
		}
	}
	var mi measureInfo
	if outFmt == "raw" {
		mi, err = measureRaw(in, size)
	} else {
		mi, err = measureQcow2(in, size, opts)
	}
	if err != nil {
		return fail("%s", err)
	}
	if output == "json" {
		d := &qdict{}
		d.put("required", mi.required).put("fully-allocated", mi.fullyAllocated)
		if mi.hasBitmaps {
			d.put("bitmaps", int64(0))
		}
		var b strings.Builder
		writeJSON(&b, d, 0)
		fmt.Fprintln(e.stdout, b.String())
		return 0
	}
	fmt.Fprintf(e.stdout, "required size: %d\nfully allocated size: %d\n", mi.required, mi.fullyAllocated)
	if mi.hasBitmaps {
		fmt.Fprintln(e.stdout, "bitmaps size: 0")
	}
	return 0
}

// measureRaw is QEMU's raw_measure: every byte, allocated or not.
func measureRaw(in *block.Node, size int64) (measureInfo, error) {
	req := (size + 511) &^ 511
	if in != nil {
		req = in.Length()
	}
	return measureInfo{required: req, fullyAllocated: req}, nil
}

// measureQcow2 is QEMU's qcow2_measure: a fully allocated image's size,
// less the data clusters the input does not allocate (with
// preallocation=off or metadata). Bitmaps are counted as QEMU does for a
// version 3 qcow2 input (minivmm keeps none, so their size is 0).
func measureQcow2(in *block.Node, size int64, opts *cmdline.Opts) (measureInfo, error) {
	co, err := qcow2CreateOptions(opts, uint64(max(size, 0)), "", "")
	if err != nil {
		return measureInfo{}, err
	}
	if co.ClusterSize == 0 {
		co.ClusterSize = 65536
	}
	if co.RefcountBits == 0 {
		co.RefcountBits = 16
	}
	if co.Version == 0 {
		co.Version = 3
	}
	if co.Preallocation == "" {
		co.Preallocation = "off"
	}
	cs := co.ClusterSize
	if cs >= 512 && cs&(cs-1) == 0 {
		l2e := int64(8)
		if co.ExtendedL2 {
			l2e = 16
		}
		virtual := (int64(co.Size) + cs - 1) / cs * cs
		if (virtual/cs+cs/l2e-1)/(cs/l2e)*8 > 32<<20 {
			return measureInfo{}, errors.New("The image size is too large (try using a larger cluster size)")
		}
	}
	if in != nil {
		co.Size = uint64(in.Length())
	}
	if err := qcow2.ValidateCreate(co); err != nil {
		return measureInfo{}, err
	}
	virtual := (int64(co.Size) + cs - 1) / cs * cs
	partial := co.Preallocation == "off" || co.Preallocation == "metadata"
	required := virtual
	if partial && in == nil {
		required = 0
	}
	if in != nil && partial {
		required = 0
		length := in.Length()
		for off := int64(0); off < length; {
			st, err := chainStatus(in, off, length-off)
			if err != nil {
				return measureInfo{}, errors.New("Unable to get block status: " + qtool.Strerror(err))
			}
			n := st.length
			if !st.zero && st.data && st.present {
				n = (off+n+cs-1)/cs*cs - off
				required += off%cs + n
			}
			off += n
		}
	}
	full := qcow2.PreallocSize(virtual, cs, co.RefcountBits, co.ExtendedL2)
	mi := measureInfo{fullyAllocated: full, required: full - virtual + required}
	if in != nil && co.Version >= 3 {
		if q, ok := in.Image().(interface{ FormatSpecific() qcow2.FormatInfo }); ok && q.FormatSpecific().Version >= 3 {
			mi.hasBitmaps = true
		}
	}
	return mi, nil
}
