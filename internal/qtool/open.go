package qtool

import (
	"errors"
	"fmt"
	"io"

	"minivmm/block"
	"minivmm/cmdline"
)

// OpenFlags describe an image as the tools' command lines do: a filename
// (or, with ImageOpts, an option string) and the flags QEMU turns into
// options (update_options_from_flags).
type OpenFlags struct {
	File       string
	Format     string // "": probed
	ImageOpts  bool
	ReadOnly   bool
	NoCache    bool   // BDRV_O_NOCACHE: cache.direct
	NoFlush    bool   // BDRV_O_NO_FLUSH: cache.no-flush
	Unmap      bool   // BDRV_O_UNMAP: discard=unmap
	ForceShare bool   // -U: force-share=on
	AIO        string // -i/-k (BDRV_O_NATIVE_AIO, BDRV_O_IO_URING): "" leaves aio alone
	// Extra are options given beside the filename (qemu-io's open -o):
	// merged over what File and Format make; its driver is taken as
	// Format when none is given.
	Extra block.Options
}

// SetCacheMode sets the cache flags for a -t/-T mode
// (bdrv_parse_cache_mode), replacing what an earlier one set, and says
// whether the mode is writethrough (a flush after every write).
func (f *OpenFlags) SetCacheMode(mode string) (writethrough, ok bool) {
	switch mode {
	case "none", "off":
		f.NoCache, f.NoFlush = true, false
	case "directsync":
		f.NoCache, f.NoFlush, writethrough = true, false, true
	case "writeback":
		f.NoCache, f.NoFlush = false, false
	case "unsafe":
		f.NoCache, f.NoFlush = false, true
	case "writethrough":
		f.NoCache, f.NoFlush, writethrough = false, false, true
	default:
		return false, false
	}
	return writethrough, true
}

// ErrForceShareConflict is -U with image options that say force-share=off.
var ErrForceShareConflict = errors.New("-U conflicts with image options")

// Options builds the node options f describes, for graph g (whose drivers
// -f may name).
func (f *OpenFlags) Options(g *block.Graph) (block.Options, error) {
	var opts block.Options
	if f.ImageOpts {
		m, err := cmdline.ParseKeyval(f.File, "")
		if err != nil {
			return nil, err
		}
		opts = block.FromKeyval(m)
		// QEMU's bdrv_open completes these as it does a filename's
		// options: nbd's legacy keys, a child given by filename takes
		// its protocol.
		if err := legacyNBD(opts); err != nil {
			return nil, err
		}
		if err := checkLegacy(g, opts); err != nil {
			return nil, err
		}
	} else {
		var err error
		if opts, err = f.fileOptions(g); err != nil {
			return nil, err
		}
	}
	// The flags fill in what the options leave out: options given
	// explicitly win.
	setDefault(opts, "read-only", f.ReadOnly)
	cache, _ := opts.Object("cache")
	if cache == nil {
		if _, set := opts["cache"]; !set {
			cache = block.Options{}
		}
	}
	if cache != nil {
		cache = cache.Clone()
		setDefault(cache, "direct", f.NoCache)
		setDefault(cache, "no-flush", f.NoFlush)
		opts["cache"] = cache
	}
	setDefault(opts, "discard", map[bool]string{true: "unmap", false: "ignore"}[f.Unmap])
	setAIO(opts, f.AIO)
	if f.ForceShare {
		if v, set := opts["force-share"]; set && fmt.Sprint(v) != "on" && v != true {
			return nil, ErrForceShareConflict
		}
		opts["force-share"] = true
	}
	return opts, nil
}

// setAIO gives the file nodes of opts (the image and the children written
// inline: QEMU's aio flags reach every child) the aio mode, unless their
// options name one; only the file driver reads it, and checks it (native
// needs cache.direct=on).
func setAIO(opts block.Options, mode string) {
	if mode == "" || opts == nil {
		return
	}
	if d, _ := opts.String("driver", ""); d == "file" {
		setDefault(opts, "aio", mode)
	}
	for _, child := range []string{"file", "backing"} {
		if c, _ := opts.Object(child); c != nil {
			setAIO(c, mode)
		}
	}
}

func setDefault(o block.Options, key string, v any) {
	if _, set := o[key]; !set {
		o[key] = v
	}
}

// ProbedRawWarning is QEMU's warning for a writable image taken for raw
// by probing.
func ProbedRawWarning(w io.Writer, filename string) {
	fmt.Fprintf(w, "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"+
		"         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n"+
		"         Specify the 'raw' format explicitly to remove the restrictions.\n", filename)
}

// Open opens the image f describes in g (block.Graph.Open, probing the
// format under policy when none is given), warns on warn when a writable
// image was taken for raw by probing, and attaches it with write
// permission unless f.ReadOnly, as qemu-io's openfile and qemu-img's
// img_open do.
func Open(g *block.Graph, f *OpenFlags, policy block.ProbePolicy, warn io.Writer) (block.Opened, error) {
	opts, err := f.Options(g)
	if err != nil {
		return block.Opened{}, err
	}
	op, err := g.Open(opts, policy)
	if err != nil {
		return block.Opened{}, err
	}
	if op.ProbedRaw() && !f.ReadOnly {
		filename, _ := opts.Object("file")
		name, _ := filename.String("filename", "")
		ProbedRawWarning(warn, name)
	}
	if _, err := g.Attach("", op.Node, block.Perm{Write: !f.ReadOnly, ShareWrite: f.ForceShare}); err != nil {
		return block.Opened{}, err
	}
	return op, nil
}
