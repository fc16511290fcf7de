package imgtool

// minivmm img create: qemu-img create for raw and qcow2.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/file"
	"minivmm/block/qcow2"
	"minivmm/cmdline"
	"minivmm/internal/qtool"
	"minivmm/qemuopen"
)

func init() {
	imgCommands["create"] = imgCommand{
		run:   runImgCreate,
		usage: "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] [-add-fd fd=N,set=M] filename [size]",
	}
}

// createKinds are the -o parameters each format accepts.
var createKinds = map[string]map[string]cmdline.Kind{
	// nocow and extent_size_hint are the file protocol's, which qemu-img
	// takes beside any format's.
	"raw": {"size": cmdline.OptSize, "preallocation": cmdline.OptString,
		"nocow": cmdline.OptBool, "extent_size_hint": cmdline.OptSize},
	"qcow2": {
		"size": cmdline.OptSize, "compat": cmdline.OptString, "backing_file": cmdline.OptString,
		"backing_fmt": cmdline.OptString, "cluster_size": cmdline.OptSize,
		"preallocation": cmdline.OptString, "lazy_refcounts": cmdline.OptBool,
		"refcount_bits": cmdline.OptNumber, "extended_l2": cmdline.OptBool,
		"compression_type": cmdline.OptString,
		"data_file":        cmdline.OptString, "data_file_raw": cmdline.OptBool,
		"nocow":            cmdline.OptBool,
		"extent_size_hint": cmdline.OptSize,
	},
}

func init() {
	for _, k := range encryptKeys {
		createKinds["qcow2"][k.name] = k.kind
	}
}

func runImgCreate(e *env, args []string) int {
	stdout, stderr := e.stdout, e.stderr
	format, backing, backingFmt := "raw", "", ""
	backingGiven := false
	var optStrs []string
	quiet, unsafe := false, false
	a, rc, ok := e.getopt(args, "F:b:f:o:qu", nil, func(c rune, arg string) bool {
		switch c {
		case 'f':
			format = arg
		case 'b':
			backing, backingGiven = arg, true
		case 'F':
			backingFmt = arg
		case 'o':
			return e.accumulateOption(&optStrs, arg)
		case 'q':
			quiet = true
		case 'u':
			unsafe = true
		}
		return true
	})
	if !ok {
		return rc
	}
	if hasHelpOption(optStrs) {
		filename := ""
		if len(a.operands) > 0 {
			filename = a.operands[0]
		}
		return e.createOptionHelp(format, filename)
	}
	switch {
	case len(a.operands) == 0:
		fmt.Fprintf(stderr, "%s: Expecting image file name\n", e.prog)
		return e.tryHelp()
	case len(a.operands) > 2:
		fmt.Fprintf(stderr, "%s: Unexpected argument: %s\n", e.prog, a.operands[2])
		return e.tryHelp()
	}
	filename := a.operands[0]
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "%s: %s: %s\n", e.prog, filename, fmt.Sprintf(format, a...))
		return 1
	}
	var size uint64
	haveSize := false
	if len(a.operands) == 2 {
		n, err := cmdline.ParseSize(a.operands[1])
		if err != nil || n > 1<<63-1 {
			fmt.Fprintf(stderr, "%s: Invalid image size specified. You may use k, M, G, T, P or E suffixes for\n"+
				"%s: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.\n", e.prog, e.prog)
			return 1
		}
		size, haveSize = n, true
	}
	kinds, ok := createKinds[format]
	if !ok {
		return fail("%s", noCreateError(format))
	}
	opts, err := cmdline.ParseOpts(strings.Join(optStrs, ","), "")
	if err == nil {
		err = opts.Validate(kinds)
	}
	if err != nil {
		return fail("%s", withSizeHint(err.Error()))
	}
	if v, ok := opts.Get("size"); ok {
		if haveSize {
			return fail("The image size must be specified only once")
		}
		size, _ = cmdline.ParseSize(v)
		haveSize = true
	}
	if v, ok := opts.Get("backing_file"); ok && !backingGiven {
		backing, backingGiven = v, true
	}
	if v, ok := opts.Get("backing_fmt"); ok && backingFmt == "" {
		backingFmt = v
	}
	if backingGiven && format == "raw" {
		return fail("Backing file not supported for file format 'raw'")
	}
	switch {
	case backingGiven && backing == filename:
		return fail("Error: Trying to create an image with the same filename as the backing file")
	case backingGiven && backing == "":
		return fail("Expected backing file name, got empty string")
	}

	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	if err := cmdline.AddFds(reg, a.addFds); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", e.prog, err)
		return 1
	}

	if backing != "" {
		// As qemu-img's bdrv_img_create: the backing file is opened (its
		// format probed when not named) before a missing backing format
		// is refused, so that an unopenable one says so first.
		if unsafe && backingFmt == "" {
			return fail("Backing file specified without backing format")
		}
		if !unsafe {
			n, probed, err := backingSize(reg, filename, backing, backingFmt)
			if err != nil {
				return fail("%s\nCould not open backing image.", err)
			}
			if backingFmt == "" {
				// QEMU's hint has no newline at its end.
				fmt.Fprintf(stderr, "%s: %s: Backing file specified without backing format\nDetected format of %s.", e.prog, filename, probed)
				return 1
			}
			if !haveSize {
				size, haveSize = uint64(n), true
			}
		}
	}
	if !haveSize {
		return fail("Image creation needs a size parameter")
	}

	// The line qemu-img prints before it creates anything.
	line := []string{fmt.Sprintf("Formatting '%s', fmt=%s", filename, format)}
	// QEMU's qemu_opts_print doubles the commas of string values.
	esc := func(v string) string { return strings.ReplaceAll(v, ",", ",,") }
	add := func(key, def string) {
		if v, ok := opts.Get(key); ok {
			if kinds[key] == cmdline.OptString {
				v = esc(v)
			}
			line = append(line, key+"="+v)
		} else if def != "" {
			line = append(line, key+"="+def)
		}
	}
	prealloc, _ := opts.Get("preallocation")
	if format == "raw" {
		line = append(line, fmt.Sprintf("size=%d", size))
		add("preallocation", "")
	} else {
		for _, k := range encryptKeys {
			add(k.name, "")
		}
		cs, _ := opts.Size("cluster_size", 65536)
		line = append(line, fmt.Sprintf("cluster_size=%d", cs))
		add("extended_l2", "off")
		add("preallocation", "")
		add("compression_type", "zlib")
		line = append(line, fmt.Sprintf("size=%d", size))
		add("compat", "")
		if backing != "" {
			line = append(line, "backing_file="+esc(backing))
		}
		if backingFmt != "" {
			line = append(line, "backing_fmt="+esc(backingFmt))
		}
		add("data_file", "")
		add("data_file_raw", "")
		add("lazy_refcounts", "off")
		add("refcount_bits", "16")
	}
	add("nocow", "")
	if v, ok := opts.Get("extent_size_hint"); ok {
		hint, _ := cmdline.ParseSize(v)
		line = append(line, fmt.Sprintf("extent_size_hint=%d", hint))
	}
	if !quiet {
		fmt.Fprintln(stdout, strings.Join(line, " "))
		flush(stdout) // bdrv_img_create flushes it: errors come after it
	}

	// The file protocol's options, as QEMU's file driver takes them:
	// the extent size hint defaults to 1 MiB.
	nocow, _ := opts.Get("nocow")
	hint, explicitHint := uint64(1<<20), false
	if v, ok := opts.Get("extent_size_hint"); ok {
		hint, _ = cmdline.ParseSize(v)
		explicitHint = true
	}
	if hint > 1<<32-1 {
		return fail("Extent size hint is too large")
	}
	var write func(fd int) error
	if format == "raw" {
		switch prealloc {
		case "", "off", "falloc", "full":
		default:
			return fail("Unsupported preallocation mode: %s", prealloc)
		}
		write = func(fd int) error { return createRaw(fd, (size+511)&^511, prealloc) }
	} else {
		co, err := qcow2CreateOptions(opts, size, backing, backingFmt)
		if err == nil {
			err = checkEncryption(e.objects, opts)
		}
		if err == nil {
			err = qcow2.ValidateCreate(co)
		}
		if err != nil {
			return fail("%s", err)
		}
		if _, given := opts.Get("data_file"); given {
			if err := createDataFile(reg, co.DataFile, size, prealloc); err != nil {
				return fail("%s", err)
			}
		}
		write = func(fd int) error { return qcow2.Create(qcow2.FdTarget(fd), co) }
	}

	// Not O_TRUNC: the image may be in use (another process writing it
	// holds its locks), and is truncated only once the locks qemu-img's
	// create takes are ours.
	// The file protocol's explicit prefix names the file after it (QEMU's
	// file driver strips it), so that names with colons can be given.
	path := strings.TrimPrefix(filename, "file:")
	fd, err := reg.Create(path, unix.O_RDWR, 0o644)
	if err != nil {
		var qe *qemuopen.Error
		if errors.As(err, &qe) && qe.Msg == "" {
			return fail("Could not create '%s': %s", path, qtool.Strerror(err))
		}
		return fail("%s", err)
	}
	release, err := file.LockForCreate(reg, fd, path)
	if err != nil {
		reg.Close(fd)
		return fail("%s", qtool.Message(err)) // names the file, as qemu-img does
	}
	err = unix.Ftruncate(fd, 0)
	if err == nil {
		if nocow == "on" {
			setNoCOW(fd)
		}
		if herr := setExtentSizeHint(fd, uint32(hint)); herr != nil && explicitHint && hint != 0 {
			fmt.Fprintf(stderr, "%s: warning: Failed to set extent size hint: %s\n", e.prog, qtool.Strerror(herr))
		}
		err = write(fd)
	}
	if err == nil {
		err = unix.Fsync(fd)
	}
	release()
	reg.Close(fd)
	if err != nil {
		if !strings.HasPrefix(path, qemuopen.FdsetPrefix) {
			os.Remove(path) // as qemu-img: no half-written image stays
		}
		return fail("Could not write image: %s", qtool.Strerror(err))
	}
	return 0
}

// qcow2CreateOptions reads the qcow2 options, in QEMU's words when a value
// is not accepted.
func qcow2CreateOptions(opts *cmdline.Opts, size uint64, backing, backingFmt string) (qcow2.CreateOptions, error) {
	co := qcow2.CreateOptions{Size: size, BackingFile: backing, BackingFormat: backingFmt}
	cs, err := opts.Size("cluster_size", 65536)
	if err != nil {
		return co, err
	}
	if cs > 1<<62 {
		cs = 3 // refused as not a power of two
	}
	co.ClusterSize = int64(cs)
	switch v, _ := opts.Get("compat"); v {
	case "", "1.1", "v3":
		co.Version = 3
	case "0.10", "v2":
		co.Version = 2
	default:
		return co, fmt.Errorf("Parameter 'version' does not accept value '%s'", v)
	}
	rb, err := opts.Uint("refcount_bits", 16)
	if err != nil {
		return co, err
	}
	if rb == 0 || rb > 64 {
		return co, errors.New("Refcount width must be a power of two and may not exceed 64 bits")
	}
	co.RefcountBits = int(rb)
	if co.LazyRefcounts, err = opts.Bool("lazy_refcounts", false); err != nil {
		return co, err
	}
	if co.ExtendedL2, err = opts.Bool("extended_l2", false); err != nil {
		return co, err
	}
	co.Compression, _ = opts.Get("compression_type")
	co.DataFile, _ = opts.Get("data_file")
	if co.DataFileRaw, err = opts.Bool("data_file_raw", false); err != nil {
		return co, err
	}
	co.Preallocation, _ = opts.Get("preallocation")
	return co, nil
}

// backingSize opens the backing file read-only through the block layer, as
// qemu-img does to check it, and returns its virtual size. A relative name
// is relative to the new image's directory.
func backingSize(reg *qemuopen.Registry, image, backing, backingFmt string) (size int64, format string, err error) {
	if rest, ok := strings.CutPrefix(backing, "json:"); ok {
		return jsonBackingSize(reg, rest, backingFmt)
	}
	path := backing
	if !filepath.IsAbs(path) && !strings.HasPrefix(path, qemuopen.FdsetPrefix) &&
		!strings.HasPrefix(image, qemuopen.FdsetPrefix) && block.ProtocolFor(path) == "file" {
		path = filepath.Join(filepath.Dir(image), path)
	}
	g := block.NewGraph(reg)
	defer g.Close()
	openErr := func(err error) error {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("Could not open '%s': %s", path, qtool.Strerror(err))
		}
		return errors.New(qtool.Message(err))
	}
	if backingFmt == "" {
		// Probed, as bdrv_open does for a filename without a driver.
		backingFmt = "raw"
		if block.ProtocolFor(path) == "file" {
			probed, err := block.ProbeFile(g.Files(), path)
			if err != nil {
				return 0, "", openErr(err)
			}
			backingFmt = probed
		}
	}
	drv, ok := block.LookupDriver(backingFmt)
	if !ok {
		return 0, "", fmt.Errorf("Unknown driver '%s'", backingFmt)
	}
	opts := block.Options{"driver": backingFmt, "read-only": true}
	if drv.Format {
		opts["file"] = block.Options{"driver": block.ProtocolFor(path), "filename": path, "read-only": true}
	} else {
		opts["filename"] = path
	}
	node, err := g.Add(opts)
	if err != nil {
		return 0, "", openErr(err)
	}
	return node.Length(), backingFmt, nil
}

// jsonBackingSize opens a json: backing name as qemu-img's create does:
// the options as given, the backing format as their driver where they
// name none.
func jsonBackingSize(reg *qemuopen.Registry, rest, backingFmt string) (size int64, format string, err error) {
	opts, err := block.ParseJSONFilename(rest)
	if err != nil {
		return 0, "", err
	}
	if d, _ := opts.String("driver", ""); d == "" {
		if backingFmt == "" {
			return 0, "", errors.New("Must specify either driver or file")
		}
		opts["driver"] = backingFmt
	}
	opts["read-only"] = true
	g := block.NewGraph(reg)
	defer g.Close()
	node, err := g.Add(opts)
	if err != nil {
		return 0, "", errors.New(qtool.Message(err))
	}
	return node.Length(), node.Driver(), nil
}

// createRaw sizes a raw image: sparse, fallocated, or written with zeroes.
func createRaw(fd int, size uint64, prealloc string) error {
	if err := unix.Ftruncate(fd, 0); err != nil {
		return err
	}
	switch prealloc {
	case "falloc":
		if size > 0 {
			if err := unix.Fallocate(fd, 0, 0, int64(size)); err != nil {
				return err
			}
		}
	case "full":
		zero := make([]byte, min(size, 1<<20))
		for off := uint64(0); off < size; off += uint64(len(zero)) {
			n := min(uint64(len(zero)), size-off)
			if _, err := qcow2.FdTarget(fd).WriteAt(zero[:n], int64(off)); err != nil {
				return err
			}
		}
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return err
	}
	if prealloc == "full" || size == 0 {
		return nil
	}
	// As QEMU's allocate_first_block: the first block written, so that
	// probing the file's alignment (O_DIRECT) finds an allocated block.
	_, err := qcow2.FdTarget(fd).WriteAt(make([]byte, min(size, 4096)), 0)
	return err
}

// withSizeHint is an option error as qemu-img prints it: a bad size
// value gets QEMU's line on the suffixes.
func withSizeHint(msg string) string {
	if strings.HasSuffix(msg, "below 2^64") {
		msg += "\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively."
	}
	return msg
}
