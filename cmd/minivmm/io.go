package main

// minivmm io: qemu-io over minivmm's block layer. Options, commands,
// output and exit status follow QEMU 7.2's qemu-io, including where it
// prints what (stdout or stderr) and its "qemu-io: " prefix, so that
// scripts written for qemu-io work unchanged.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/cmdline"
	"minivmm/qemuopen"
)

// ioProg names the tool in its messages, as qemu-io's argv[0] does.
const ioProg = "qemu-io"

const ioUsage = `Usage: minivmm io [OPTIONS]... [-c STRING]... [file]
QEMU Disk exerciser, on minivmm's block layer

  --image-opts         treat file as option string
  -c, --cmd STRING     execute command with its arguments
                       from the given string
  -f, --format FMT     specifies the block driver to use
  -r, --read-only      export read-only
  -n, --nocache        disable host cache, short for -t none
  -t, --cache=MODE     use the given cache mode for the image
  -d, --discard=MODE   use the given discard mode for the image
  -U, --force-share    force shared permissions
  -add-fd fd=N,set=M[,opaque=S]
                       put inherited fd N into fd set M (as minivmm's
                       -add-fd); file may then be /dev/fdset/M
  -h, --help           display this help and exit

See 'minivmm io -c help' for information on available commands.
`

// ioOptions is what the command line asked for.
type ioOptions struct {
	cmds         []string
	format       string
	imageOpts    bool
	readOnly     bool
	nocache      bool // BDRV_O_NOCACHE: cache.direct
	noFlush      bool // BDRV_O_NO_FLUSH: cache.no-flush
	writethrough bool // flush after every write (qemu-io's default)
	unmap        bool // BDRV_O_UNMAP: discard=unmap (qemu-io's default)
	forceShare   bool
	addFds       []cmdline.Occurrence
	file         string
	haveFile     bool
}

// unsupportedIOOptions are qemu-io options minivmm io does not have;
// they are refused by name rather than called invalid.
var unsupportedIOOptions = map[rune]string{
	's': "-s", 'C': "-C", 'm': "-m", 'k': "-k", 'i': "-i", 'T': "-T", 'V': "-V", 'o': "--object",
}

// parseIOArgs reads the command line; done means exit with code.
func parseIOArgs(args []string, stdout, stderr io.Writer) (o *ioOptions, code int, done bool) {
	o = &ioOptions{writethrough: true, unmap: true}
	g := &getopt{
		prog: ioProg, args: args, short: "hVc:d:f:rsnCmkt:T:Ui:", stderr: stderr,
		long: []longOption{
			{"help", false, 'h'}, {"version", false, 'V'}, {"cmd", true, 'c'}, {"format", true, 'f'},
			{"read-only", false, 'r'}, {"snapshot", false, 's'}, {"nocache", false, 'n'},
			{"copy-on-read", false, 'C'}, {"misalign", false, 'm'}, {"native-aio", false, 'k'},
			{"aio", true, 'i'}, {"discard", true, 'd'}, {"cache", true, 't'}, {"trace", true, 'T'},
			{"object", true, 'o'}, {"image-opts", false, 'I'}, {"force-share", false, 'U'},
			{"add-fd", true, 'A'},
		},
		dash: []longOption{{"add-fd", true, 'A'}},
	}
	fail := func(format string, a ...any) (*ioOptions, int, bool) {
		fmt.Fprintf(stderr, ioProg+": "+format+"\n", a...)
		return nil, 1, true
	}
	for {
		c, arg := g.next()
		switch c {
		case 0:
			switch len(g.operands) {
			case 0:
			case 1:
				o.file, o.haveFile = g.operands[0], true
			default:
				io.WriteString(stdout, ioUsage)
				return nil, 1, true
			}
			if o.imageOpts && o.format != "" {
				return fail("--image-opts and -f are mutually exclusive")
			}
			return o, 0, false
		case '?':
			io.WriteString(stdout, ioUsage)
			return nil, 1, true
		case 'h':
			io.WriteString(stdout, ioUsage)
			return nil, 0, true
		case 'c':
			o.cmds = append(o.cmds, arg)
		case 'f':
			o.format = arg
		case 'r':
			o.readOnly = true
		case 'n':
			o.nocache, o.writethrough = true, false
		case 't':
			// bdrv_parse_cache_mode: replaces what -n or an earlier -t set.
			switch arg {
			case "none", "off":
				o.nocache, o.noFlush, o.writethrough = true, false, false
			case "directsync":
				o.nocache, o.noFlush, o.writethrough = true, false, true
			case "writeback":
				o.nocache, o.noFlush, o.writethrough = false, false, false
			case "unsafe":
				o.nocache, o.noFlush, o.writethrough = false, true, false
			case "writethrough":
				o.nocache, o.noFlush, o.writethrough = false, false, true
			default:
				return fail("Invalid cache option: %s", arg)
			}
		case 'd':
			switch arg {
			case "off", "ignore":
				o.unmap = false
			case "on", "unmap":
				o.unmap = true
			default:
				return fail("Invalid discard option: %s", arg)
			}
		case 'U':
			o.forceShare = true
		case 'I':
			o.imageOpts = true
		case 'A':
			o.addFds = append(o.addFds, cmdline.Occurrence{Name: "add-fd", Value: arg})
		default:
			return fail("option %s is not supported by minivmm io", unsupportedIOOptions[c])
		}
	}
}

// runIO is "minivmm io": it opens the image, runs the -c commands (or
// those read from stdin) and closes everything. It returns the exit
// status: 1 when anything failed, as qemu-io's.
func runIO(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o, code, done := parseIOArgs(args, stdout, stderr)
	if done {
		return code
	}
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	if err := (&vmm{stderr: stderr, fds: reg}).addFds(o.addFds); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", ioProg, err)
		return 1
	}
	out := newStdoutWriter(stdout)
	defer out.flush()
	t := &ioTool{out: out, stderr: stderr, writethrough: o.writethrough}
	if o.haveFile {
		t.g = block.NewGraph(reg)
		defer t.g.Close()
		if err := t.open(o); err != nil {
			where := " device " + o.file
			if o.imageOpts {
				where = ""
			}
			fmt.Fprintf(stderr, "%s: can't open%s: %s\n", ioProg, where, message(err))
			return 1
		}
	}
	failed := false
	if len(o.cmds) > 0 {
		for _, c := range o.cmds {
			if t.command(c) != nil {
				failed = true
			}
			if t.quit {
				break
			}
		}
	} else {
		failed = t.commandLoop(stdin)
	}
	if failed {
		return 1
	}
	return 0
}

// commandLoop reads commands from r as qemu-io does: a "qemu-io> "
// prompt before each (qemu-io prints it whether or not r is a terminal),
// lines of at most 1023 bytes (longer ones are split, as fgets splits
// them), until EOF or quit. It reports whether any command failed.
func (t *ioTool) commandLoop(r io.Reader) bool {
	br := bufio.NewReader(r)
	failed := false
	for !t.quit {
		t.printf("%s> ", ioProg)
		t.out.flush()
		line, err := readLine(br, 1023)
		if line == "" && err != nil {
			break
		}
		if t.command(strings.TrimSuffix(line, "\n")) != nil {
			failed = true
		}
	}
	return failed
}

// readLine returns the next line with its newline, or at most max bytes.
func readLine(br *bufio.Reader, max int) (string, error) {
	var b strings.Builder
	for b.Len() < max {
		c, err := br.ReadByte()
		if err != nil {
			return b.String(), err
		}
		b.WriteByte(c)
		if c == '\n' {
			break
		}
	}
	return b.String(), nil
}

// open builds the image's options from the command line, opens it and
// attaches it with write permission unless -r, as qemu-io's openfile.
func (t *ioTool) open(o *ioOptions) error {
	var opts block.Options
	if o.imageOpts {
		m, err := cmdline.ParseKeyval(o.file, "")
		if err != nil {
			return err
		}
		opts = block.FromKeyval(m)
	} else {
		opts = block.Options{}
		if o.format != "" {
			drv, ok := block.LookupDriver(o.format)
			if !ok {
				return fmt.Errorf("Unknown driver '%s'", o.format)
			}
			opts["driver"] = o.format
			if drv.Format {
				opts["file"] = block.Options{"driver": "file", "filename": o.file}
			} else {
				opts["filename"] = o.file
			}
		} else {
			opts["file"] = block.Options{"driver": "file", "filename": o.file}
		}
	}
	// The flags fill in what the options leave out (QEMU's
	// update_options_from_flags): options given explicitly win.
	setDefault(opts, "read-only", o.readOnly)
	cache, _ := opts.Object("cache")
	if cache == nil {
		if _, set := opts["cache"]; !set {
			cache = block.Options{}
		}
	}
	if cache != nil {
		cache = cache.Clone()
		setDefault(cache, "direct", o.nocache)
		setDefault(cache, "no-flush", o.noFlush)
		opts["cache"] = cache
	}
	setDefault(opts, "discard", map[bool]string{true: "unmap", false: "ignore"}[o.unmap])
	if o.forceShare {
		if v, set := opts["force-share"]; set && fmt.Sprint(v) != "on" && v != true {
			return errors.New("-U conflicts with image options")
		}
		opts["force-share"] = true
	}

	var node *block.Node
	var err error
	if _, hasDriver := opts["driver"]; hasDriver {
		if name, err := opts.String("driver", ""); err == nil {
			if _, known := block.LookupDriver(name); !known {
				return fmt.Errorf("Unknown driver '%s'", name)
			}
		}
		node, err = t.g.Add(opts)
	} else {
		node, err = t.probeAndOpen(opts, o)
	}
	if err != nil {
		return err
	}
	if _, err := t.g.Attach("", node, block.Perm{Write: !o.readOnly, ShareWrite: o.forceShare}); err != nil {
		return err
	}
	t.node, t.writable = node, !o.readOnly
	return nil
}

func setDefault(o block.Options, key string, v any) {
	if _, set := o[key]; !set {
		o[key] = v
	}
}

// probeAndOpen opens an image whose format was not given: its file
// first, then the format block.Probe finds in the file's first 512 bytes.
// A probed format is taken only for reading (-r). For writing, only raw
// is: with QEMU's warning, and with writes that would make its first
// sector look like another format refused (see guardProbed), so that a
// writable image is never taken for a format the user did not name nor
// turned into one; any other probed format must be given with -f.
func (t *ioTool) probeAndOpen(opts block.Options, o *ioOptions) (*block.Node, error) {
	fileRef, present := opts["file"]
	fileOpts, isObject := fileRef.(block.Options)
	if !present || !isObject {
		if !present {
			return nil, errors.New("Must specify either driver or file")
		}
		return t.g.Add(opts) // a reference to a node that cannot exist yet
	}
	fileOpts = fileOpts.Clone()
	for _, k := range []string{"read-only", "discard", "force-share"} {
		if v, set := opts[k]; set {
			setDefault(fileOpts, k, v)
		}
	}
	if pc, _ := opts.Object("cache"); pc != nil {
		c, _ := fileOpts.Object("cache")
		if c == nil {
			c = block.Options{}
		}
		c = c.Clone()
		for _, k := range slices.Sorted(maps.Keys(pc)) {
			setDefault(c, k, pc[k])
		}
		fileOpts["cache"] = c
	}
	file, err := t.g.Add(fileOpts)
	if err != nil {
		return nil, err
	}
	header := make([]byte, min(512, file.Length()))
	if _, err := file.ReadAt(header, 0); err != nil {
		return nil, fmt.Errorf("Could not read image for determining its format: %s", strerror(err))
	}
	filename, _ := fileOpts.String("filename", "")
	format := block.Probe(header, filename)
	if format != "raw" && !o.readOnly {
		// QEMU would open the format read-write, and an image in use
		// refuses that first: test its locks as that format's writer.
		b, err := t.g.Attach("", file, block.Perm{Write: true, Image: true})
		if err != nil {
			return nil, err
		}
		t.g.Detach(b)
		return nil, fmt.Errorf("Image format was not specified for '%s' and probing guessed %s; "+
			"name the format (-f %s) to open it for writing, or open it read-only (-r)", filename, format, format)
	}
	opts = opts.Clone()
	opts["driver"] = format
	opts["file"] = file.Name()
	node, err := t.g.Add(opts)
	if err != nil {
		return nil, err
	}
	if format == "raw" && !o.readOnly {
		fmt.Fprintf(t.stderr, "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"+
			"         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n"+
			"         Specify the 'raw' format explicitly to remove the restrictions.\n", filename)
		t.probedRaw = true
	}
	return node, nil
}

// guardProbed refuses a write to a probed raw image that would make its
// first 512 bytes probe as another format (QEMU's raw driver does the
// same), so that a guest cannot turn a raw image into, say, a qcow2 with
// a backing file of its choosing. data nil means zeroes.
func (t *ioTool) guardProbed(data []byte, off, n int64) error {
	if !t.probedRaw || off >= 512 || n == 0 {
		return nil
	}
	sector := make([]byte, min(512, t.node.Length()))
	if _, err := t.node.ReadAt(sector, 0); err != nil {
		return err
	}
	end := min(int64(len(sector)), off+n)
	if data != nil {
		copy(sector[off:end], data)
	} else {
		clear(sector[off:end])
	}
	if block.Probe(sector, "") != "raw" {
		return &block.Error{Node: t.node.Name(), Op: "write", Off: off, Len: n, Err: errPermProbed}
	}
	return nil
}

var errPermProbed = fmt.Errorf("write to block 0 of a probed raw image would change its format: %w", unix.EPERM)
