package imgtool

// minivmm img convert: qemu-img convert over minivmm's block layer. The
// sources (raw, or qcow2 with its backing chain; several are
// concatenated) are opened read-only; the destination is created with img
// create's helpers and opened read-write; block/engine.Convert copies
// (-m workers, in order unless -W; zero extents skipped where the
// destination reads as zero; with -B only what the sources' top images
// allocate).
//
// Caching is qemu-img's: -t (destination) defaults to unsafe, where no
// flush reaches the disk, -T (source) to writeback.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/engine"
	"minivmm/block/objects"
	"minivmm/block/qcow2"
	"minivmm/cmdline"
	"minivmm/internal/qtool"
	"minivmm/qemuopen"
)

func init() {
	imgCommands["convert"] = imgCommand{run: runImgConvert,
		usage: "convert [--target-image-opts] [--target-is-zero] [-U] [-c] [-p] [-q] [-n] [-f fmt] [-l snapshot_param] [-S sparse_size] [-r rate_limit] [--salvage] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-m num_coroutines] [-W] [-add-fd fd=N,set=M] filename [filename2 [...]] output_filename"}
}

// imgCreateImage creates filename as `img create -f format -o opts` does,
// without its "Formatting" line (qemu-img convert prints none). As
// qemu-img convert's, errors about the options do not name the file;
// errors creating it do.
// backing and backingFmt, when set, are -B and -F, which win over -o's.
// objs are --object's, for the secret an encryption option names.
func imgCreateImage(reg *qemuopen.Registry, objs *objects.Registry, filename, format string, optStrs []string, size uint64, backing, backingFmt string) error {
	kinds, ok := createKinds[format]
	if !ok {
		return noCreateError(format)
	}
	opts, err := cmdline.ParseOpts(strings.Join(optStrs, ","), "")
	if err == nil {
		err = opts.Validate(kinds)
	}
	if err != nil {
		return err
	}
	if _, ok := opts.Get("size"); ok {
		return errors.New("Parameter 'size' is not allowed with convert; the size is the source's")
	}
	var write func(fd int) error
	if format == "raw" {
		prealloc, _ := opts.Get("preallocation")
		switch prealloc {
		case "", "off", "falloc", "full":
		default:
			return fmt.Errorf("%s: error while converting raw: invalid parameter value: %s", filename, prealloc)
		}
		write = func(fd int) error { return createRaw(fd, (size+511)&^511, prealloc) }
	} else {
		if v, ok := opts.Get("backing_file"); ok && backing == "" {
			backing = v
		}
		if v, ok := opts.Get("backing_fmt"); ok && backingFmt == "" {
			backingFmt = v
		}
		co, err := qcow2CreateOptions(opts, size, backing, backingFmt)
		if err == nil {
			err = qcow2.ValidateCreate(co)
		}
		if err == nil {
			err = checkEncryption(objs, opts)
		}
		if err != nil {
			return fmt.Errorf("%s: error while converting %s: %w", filename, format, err)
		}
		if _, given := opts.Get("data_file"); given { // create_datafile.go
			if err := createDataFile(reg, co.DataFile, size, co.Preallocation); err != nil {
				return fmt.Errorf("%s: %w", filename, err)
			}
		}
		write = func(fd int) error { return qcow2.Create(qcow2.FdTarget(fd), co) }
	}
	fd, err := reg.Create(filename, unix.O_RDWR|unix.O_TRUNC, 0o644)
	if err != nil {
		var qe *qemuopen.Error
		if errors.As(err, &qe) && qe.Msg == "" {
			return fmt.Errorf("%s: Could not create '%s': %s", filename, filename, qtool.Strerror(err))
		}
		return fmt.Errorf("%s: %s", filename, err)
	}
	err = write(fd)
	if err == nil {
		err = unix.Fsync(fd)
	}
	reg.Close(fd)
	if err != nil {
		return fmt.Errorf("%s: Could not write image: %s", filename, qtool.Strerror(err))
	}
	return nil
}

func runImgConvert(e *env, args []string) int {
	stdout, stderr := e.stdout, e.stderr
	var srcFmt, backing, backingFmt string
	outFmt := "raw"
	var optStrs []string
	progress, quiet, noCreate, outOfOrder, forceShare, compress, targetIsZero := false, false, false, false, false, false, false
	workers := 8
	// qemu-img convert's defaults: cache=unsafe for the destination
	// (no flush at all), writeback for the source.
	dstOpts := &qtool.OpenFlags{NoFlush: true, Unmap: true}
	srcOpts := &qtool.OpenFlags{ReadOnly: true}
	dstWritethrough := false
	var snap *convertSnapshot
	var sparse, rate int64
	fullyAllocate, copyRange, sparseGiven := false, false, false
	salvage, tgtImageOpts, outFmtGiven := false, false, false
	a, rc, ok := e.getopt(args, "f:O:B:F:o:cpqnm:WUt:T:l:S:r:C", []qtool.LongOption{qtool.Opt("force-share", false, 'U'), qtool.Opt("image-opts", false, 'I'),
		qtool.Opt("salvage", false, 'V'), qtool.Opt("target-image-opts", false, 'G'),
		qtool.Opt("target-is-zero", false, 'Z')}, func(c rune, arg string) bool {
		switch c {
		case 'f':
			srcFmt = arg
		case 'O':
			outFmt, outFmtGiven = arg, true
		case 'G':
			tgtImageOpts = true
		case 'B':
			backing = arg
		case 'F':
			backingFmt = arg
		case 'o':
			return e.accumulateOption(&optStrs, arg)
		case 'c':
			compress = true
		case 'p':
			progress = true
		case 'q':
			quiet = true
		case 'n':
			noCreate = true
		case 'W':
			outOfOrder = true
		case 'U':
			forceShare = true
		case 'Z':
			targetIsZero = true
		case 'I':
			srcOpts.ImageOpts = true
		case 'V':
			salvage = true
		case 'S':
			sparseGiven = true
			var ok bool
			if sparse, ok = e.cvtnum("buffer size for sparse output", arg); !ok {
				return false
			}
			if sparse%512 != 0 || sparse/512 > convertMaxBufSectors {
				fmt.Fprintf(stderr, "%s: Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to %d. "+
					"Select 0 to disable sparse detection (fully allocates output).\n", e.prog, convertMaxBufSectors*512)
				return false
			}
			fullyAllocate = sparse == 0
		case 'r':
			var ok bool
			if rate, ok = e.cvtnum("rate limit", arg); !ok {
				return false
			}
		case 'C':
			copyRange = true
		case 'l':
			var ok bool
			if snap, ok = e.parseConvertSnapshot(arg); !ok {
				return false
			}
		case 'm':
			n, err := strconv.Atoi(arg)
			if err != nil || n < 1 || n > 16 {
				fmt.Fprintf(stderr, "%s: Invalid number of coroutines. Allowed number of coroutines is between 1 and 16\n", e.prog)
				return false
			}
			workers = n
		case 't', 'T':
			o := dstOpts
			if c == 'T' {
				o = srcOpts
			}
			wt, ok := o.SetCacheMode(arg)
			if !ok {
				what := "cache"
				if c == 'T' {
					what = "source cache"
				}
				fmt.Fprintf(stderr, "%s: Invalid %s option: %s\n", e.prog, what, arg)
				return false
			}
			if c == 't' {
				dstWritethrough = wt
			}
		}
		return true
	})
	if !ok {
		return rc
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "%s: %s\n", e.prog, fmt.Sprintf(format, a...))
		return 1
	}
	if quiet {
		progress = false
	}
	if copyRange && compress {
		return fail("Cannot enable copy offloading when -c is used")
	}
	if copyRange && sparseGiven {
		return fail("Cannot enable copy offloading when -S is used")
	}
	if copyRange && salvage {
		return fail("Cannot use copy offloading in salvaging mode")
	}
	if tgtImageOpts && !noCreate {
		return fail("--target-image-opts requires use of -n flag")
	}
	if noCreate && len(optStrs) > 0 {
		return fail("-o has no effect when skipping image creation")
	}
	if targetIsZero && !noCreate {
		return fail("--target-is-zero requires use of -n flag")
	}
	if hasHelpOption(optStrs) {
		filename := ""
		if len(a.operands) > 0 {
			filename = a.operands[len(a.operands)-1]
		}
		return e.createOptionHelp(outFmt, filename)
	}
	if len(a.operands) < 2 {
		return fail("Must specify image file name")
	}
	if snap != nil && len(a.operands) > 2 {
		return fail("No support for concatenating multiple snapshot")
	}
	// From here on, as qemu-img, the progress line starts at 0 and
	// ends, even after an error.
	prog := newImgProgress(stdout, progress, 1)
	prog.set(0)
	defer prog.end()
	srcNames, dstName := a.operands[:len(a.operands)-1], a.operands[len(a.operands)-1]

	s, ok := e.newSession(a.addFds)
	if !ok {
		return 1
	}
	defer s.close()
	if !noCreate && slices.Contains(qemuNoCreate, outFmt) && knownFormatName(srcFmt) {
		if _, have := block.LookupDriver(srcFmt); !have {
			// A source in a format of QEMU's that minivmm cannot read:
			// qemu-img would open it, then refuse the target format.
			return fail("%s", noCreateError(outFmt))
		}
	}
	var sources []*block.Node
	var size int64
	for _, name := range srcNames {
		o := *srcOpts
		o.File, o.Format, o.ForceShare = name, srcFmt, forceShare
		n, err := s.open(&o)
		if err != nil {
			return fail("Could not open '%s': %s", name, qtool.Message(err))
		}
		if snap != nil {
			if err := snap.load(n); err != nil {
				return fail("Failed to load snapshot: %s", err)
			}
		}
		sources = append(sources, n)
		size += n.Length()
	}
	if !noCreate {
		if _, ok := createKinds[outFmt]; ok && outFmt == "raw" {
			// qemu-img sets -B and -F as create options, which raw lacks.
			if backing != "" {
				return fail("Backing file not supported for file format '%s'", outFmt)
			}
			if backingFmt != "" {
				return fail("Backing file format not supported for file format '%s'", outFmt)
			}
		}
		// A format without backing files rejects the option when the
		// image is created, as qemu-img's option parsing does first.
		_, backed := createKinds[outFmt]["backing_file"]
		if opts, err := cmdline.ParseOpts(strings.Join(optStrs, ","), ""); err == nil && backed {
			if v, ok := opts.Get("backing_file"); ok && backing == "" {
				backing = v
			}
			if v, ok := opts.Get("backing_fmt"); ok && backingFmt == "" {
				backingFmt = v
			}
		}
	}
	if targetIsZero && backing != "" {
		// qemu-img 7.2 prints this and exits 0 without converting.
		return fail("Cannot use --target-is-zero when the destination image has a backing file")
	}
	if len(srcNames) > 1 && backing != "" {
		return fail("Having a backing file for the target makes no sense when concatenating multiple input images")
	}
	if !noCreate && backing != "" && backingFmt == "" {
		return fail("Use of backing file requires explicit backing format")
	}
	if compress && !noCreate && outFmt != "qcow2" {
		return fail("Compression not supported for this file format")
	}
	if !noCreate {
		if err := imgCreateImage(s.reg, e.objects, dstName, outFmt, optStrs, uint64(size), backing, backingFmt); err != nil {
			return fail("%s", err)
		}
	}
	dstOpts.File, dstOpts.Format = dstName, outFmt
	if tgtImageOpts {
		// The target is an option string (with -n only), whose driver
		// says its format; -O with it is qemu-img's img_open refusal.
		if outFmtGiven {
			return fail("--image-opts and --format are mutually exclusive")
		}
		dstOpts.ImageOpts, dstOpts.Format = true, ""
	}
	dst, err := s.open(dstOpts)
	if err != nil {
		if !noCreate {
			// Bad input (a backing file that does not open) leaves
			// nothing behind, where qemu-img leaves the new image.
			os.Remove(dstName)
		}
		return fail("Could not open '%s': %s", dstName, qtool.Message(err))
	}
	co := engine.ConvertOptions{
		Workers: workers, InOrder: !outOfOrder, TargetZero: (!noCreate && backing == "") || targetIsZero,
		HasBacking: backing != "", BackingLen: -1, Writethrough: dstWritethrough,
		Sparse: sparse, FullyAllocate: fullyAllocate,
	}
	if copyRange {
		co.CopyRange = engine.CopyFileRange
	}
	if fullyAllocate {
		co.TargetZero = false
	}
	if rate > 0 {
		co.Limiter = engine.NewRate(rate)
	}
	if salvage {
		co.Salvage = func(op engine.Op, off int64, err error) {
			if quiet {
				return
			}
			if qcow2.IsCorrupt(err) {
				err = unix.EIO
			}
			what := "reading offset"
			if op == engine.OpStatus {
				what = "reading block status at offset"
			}
			fmt.Fprintf(stderr, "%s: warning: error while %s %d: %s\n", e.prog, what, off, qtool.Strerror(err))
		}
	}
	if compress {
		var ok bool
		co.Compressed, ok = dst.Image().(engine.CompressedWriter)
		if !ok {
			return fail("Compression not supported for this file format")
		}
	}
	if dst.Length() < size {
		return fail("output file is smaller than input file")
	}
	if b := dst.Child("backing"); b != nil && !noCreate {
		co.BackingLen = b.Length()
	}
	if progress {
		co.Progress = func(done, total int64) { prog.set(float32(100 * float64(done) / float64(total))) }
	}
	err = engine.Convert(context.Background(), sources, dst, co)
	if err == nil {
		if err = dst.Flush(); err != nil {
			err = fmt.Errorf("error while flushing: %s", qtool.Message(err))
		}
	}
	if err != nil {
		return fail("%s", convertError(err))
	}
	prog.set(100)
	return 0
}

// convertMaxBufSectors is qemu-img convert's MAX_BUF_SECTORS, the
// largest -S.
const convertMaxBufSectors = 32768

// convertError words an engine error as qemu-img convert does.
func convertError(err error) string {
	var ee *engine.Error
	if !errors.As(err, &ee) {
		return err.Error()
	}
	msg := qtool.Message(ee.Err)
	if qcow2.IsCorrupt(ee.Err) {
		// Told on its own line already (corruption.go); the request
		// failed with EIO, as QEMU's.
		msg = qtool.Strerror(unix.EIO)
	}
	switch ee.Op {
	case engine.OpStatus:
		return fmt.Sprintf("error while reading block status at offset %d: %s", ee.Off, msg)
	case engine.OpRead:
		return fmt.Sprintf("error while reading at byte %d: %s", ee.Off, msg)
	}
	return fmt.Sprintf("error while writing at byte %d: %s", ee.Off, msg)
}
