package imgtool

// minivmm img amend: qemu-img amend for qcow2 (lazy_refcounts,
// refcount_bits with the refcount structures rewritten, size, compat=1.1
// upgrading a version 2 image); the work is block/qcow2's Amend.

import (
	"errors"
	"fmt"
	"strings"

	"minivmm/block/qcow2"
	"minivmm/cmdline"
	"minivmm/internal/qtool"
)

func init() {
	imgCommands["amend"] = imgCommand{run: runImgAmend,
		usage: "amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o options [-add-fd fd=N,set=M] filename"}
}

// imgAmender is a format whose header options amend changes.
type imgAmender interface {
	Amend(o qcow2.AmendOptions) error
	FormatSpecific() qcow2.FormatInfo
}

// amendKeys are qcow2's amend options (qcow2_amend_opts); the other
// create options are refused as qemu-img refuses them.
var amendKeys = map[string]cmdline.Kind{
	"size": cmdline.OptSize, "compat": cmdline.OptString, "backing_file": cmdline.OptString,
	"backing_fmt": cmdline.OptString, "data_file": cmdline.OptString, "data_file_raw": cmdline.OptBool,
	"lazy_refcounts": cmdline.OptBool, "refcount_bits": cmdline.OptNumber,
}

func runImgAmend(e *env, args []string) int {
	var format, cache string
	var optStrs []string
	var progress, quiet, imageOpts bool
	a, rc, ok := e.getopt(args, "o:f:t:pq", []qtool.LongOption{
		qtool.Opt("image-opts", false, 'I'), qtool.Opt("force", false, 'F'),
	}, func(c rune, arg string) bool {
		switch c {
		case 'o':
			return e.accumulateOption(&optStrs, arg)
		case 'f':
			format = arg
		case 't':
			cache = arg
		case 'p':
			progress = true
		case 'q':
			quiet = true
		case 'I':
			imageOpts = true
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
	if len(optStrs) == 0 {
		fmt.Fprintf(e.stderr, "%s: Must specify options (-o)\n", e.prog)
		return e.tryHelp()
	}
	if quiet {
		progress = false
	}
	if format != "" && hasHelpOption(optStrs) {
		return e.amendOptionHelp(format)
	}
	if len(a.operands) != 1 {
		return fail("Expecting one image file name")
	}
	filename := a.operands[0]
	flags := &qtool.OpenFlags{File: filename, Format: format, ImageOpts: imageOpts}
	if cache != "" {
		if _, ok := flags.SetCacheMode(cache); !ok {
			return fail("Invalid cache option: %s", cache)
		}
	}
	s, ok := e.newSession(a.addFds)
	if !ok {
		return 1
	}
	defer s.close()
	node, err := s.open(flags)
	if err != nil {
		return fail("Could not open '%s': %s", filename, qtool.Message(err))
	}
	if hasHelpOption(optStrs) {
		return e.amendOptionHelp(node.Driver())
	}
	am, ok := node.Image().(imgAmender)
	if !ok {
		return fail("Format driver '%s' does not support option amendment", node.Driver())
	}
	opts, err := cmdline.ParseOpts(strings.Join(optStrs, ","), "")
	if err == nil {
		err = opts.Validate(amendKeys)
	}
	if err != nil {
		msg := err.Error()
		if o2, err2 := cmdline.ParseOpts(strings.Join(optStrs, ","), ""); err2 == nil && !amendOnly(o2) && creationOnly(o2) {
			msg += "\nThis option is only supported for image creation"
		}
		return fail("%s", withSizeHint(msg))
	}
	var ao qcow2.AmendOptions
	cur := am.FormatSpecific()
	version := int(cur.Version)
	if v, ok := opts.Get("compat"); ok {
		switch v {
		case "0.10":
			version = 2
		case "1.1", "v3":
			version = 3
		default:
			return fail("Unknown compatibility level %s", v)
		}
	}
	if _, ok := opts.Get("lazy_refcounts"); ok {
		v, err := opts.Bool("lazy_refcounts", false)
		if err != nil {
			return fail("%v", err)
		}
		ao.LazyRefcounts = &v
	}
	if _, ok := opts.Get("refcount_bits"); ok {
		v, err := opts.Uint("refcount_bits", 16)
		if err != nil {
			return fail("%v", err)
		}
		b := int(min(v, 1<<20))
		if b <= 0 || b > 64 || b&(b-1) != 0 {
			return fail("Refcount width must be a power of two and may not exceed 64 bits")
		}
		ao.RefcountBits = &b
	}
	if v, ok := opts.Get("data_file"); ok {
		ao.DataFile = &v
	}
	if _, ok := opts.Get("data_file_raw"); ok {
		v, err := opts.Bool("data_file_raw", false)
		if err != nil {
			return fail("%v", err)
		}
		ao.DataFileRaw = &v
	}
	if _, ok := opts.Get("backing_file"); ok {
		return fail("Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.")
	}
	if _, ok := opts.Get("backing_fmt"); ok {
		return fail("Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.")
	}
	if version < 3 && ao.LazyRefcounts != nil && *ao.LazyRefcounts {
		return fail("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
	}
	if version < 3 && ao.RefcountBits != nil && *ao.RefcountBits != 16 {
		return fail("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
	}
	if version < 3 && ao.RefcountBits == nil && cur.RefcountBits != 16 {
		return fail("compat=0.10 requires refcount_bits=16")
	}
	ao.Upgrade = version > int(cur.Version)
	ao.Downgrade = version < int(cur.Version)
	var size uint64
	_, resize := opts.Get("size")
	if resize {
		if size, err = opts.Size("size", 0); err != nil {
			return fail("%v\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.", err)
		}
	}
	prog := newImgProgress(e.stdout, progress, 1)
	prog.set(0)
	defer prog.end()
	ao.Progress = func(done float64) { prog.set(float32(100 * done)) }
	if err := am.Amend(ao); err != nil {
		// QEMU's qcow2_downgrade says what the expansion failed with
		// (errno), after what was printed where it failed (corruption:
		// by the corruption event).
		var xe *qcow2.ExpandError
		if errors.As(err, &xe) && (reportedError(xe.Err) || qcow2.IsCorrupt(xe.Err)) {
			if reportedError(xe.Err) {
				fail("%s", qtool.Message(xe.Err))
			}
			return fail("Failed to turn zero into data clusters: %s", qtool.Strerror(xe.Err))
		}
		return fail("%s", qtool.Message(err))
	}
	if resize && int64(size) != node.Length() {
		if err := node.Truncate(int64(size)); err != nil {
			return fail("%s", qtool.Message(err))
		}
	}
	prog.set(100)
	return 0
}

// creationOnly says whether opts are all qcow2 create options (the
// encrypt.* ones included), which amend refuses with a hint.
func creationOnly(opts *cmdline.Opts) bool {
	for _, k := range opts.Keys() {
		if _, ok := createKinds["qcow2"][k]; !ok && !strings.HasPrefix(k, "encrypt.") {
			return false
		}
	}
	return true
}

// amendOnly says whether opts name only amend options.
func amendOnly(opts *cmdline.Opts) bool {
	for _, k := range opts.Keys() {
		if _, ok := amendKeys[k]; !ok {
			return false
		}
	}
	return true
}
