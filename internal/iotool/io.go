// Package iotool is minivmm io: qemu-io over minivmm's block layer.
// Options, commands, output and exit status follow QEMU 7.2's qemu-io,
// including where it prints what (stdout or stderr), so that scripts
// written for qemu-io work unchanged; messages are prefixed with the name
// the tool was run by, as qemu-io's with its argv[0].
package iotool

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/block/objects"
	"minivmm/cmdline"
	"minivmm/internal/qtool"
	"minivmm/qemuopen"
)

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
  -s, --snapshot       use snapshot file
  -C, --copy-on-read   enable copy-on-read
  -m, --misalign       misalign allocations for O_DIRECT
  -k, --native-aio     use kernel AIO implementation
                       (Linux only, prefer use of -i)
  -i, --aio=MODE       use AIO mode (threads, native or io_uring)
  -T, --trace [[enable=]<pattern>][,events=<file>][,file=<file>]
                       accepted; minivmm traces nothing
  -U, --force-share    force shared permissions
  --object OBJECTDEF   define an object such as 'secret' for
                       passwords and/or encryption keys
  -add-fd fd=N,set=M[,opaque=S]
                       put inherited fd N into fd set M (as minivmm's
                       -add-fd); file may then be /dev/fdset/M
  -h, --help           display this help and exit
  -V, --version        output version information and exit

See 'minivmm io -c help' for information on available commands.
`

// ioOptions is what the command line asked for.
type ioOptions struct {
	objects  *objects.Registry // --object
	cmds     []string
	open     openOptions
	addFds   []cmdline.Occurrence
	haveFile bool
	version  bool
}

// openOptions is how to open an image: from the command line or the
// open command.
type openOptions struct {
	flags        qtool.OpenFlags
	writethrough bool   // flush after every write (qemu-io's default)
	aio          string // -i/-k: checked against the cache mode at open
	snapshot     bool   // -s: writes go to a temporary overlay
	copyOnRead   bool   // -C
}

// parseIOArgs reads the command line; done means exit with code.
func parseIOArgs(prog string, args []string, stdout, stderr io.Writer) (o *ioOptions, code int, done bool) {
	o = &ioOptions{open: openOptions{writethrough: true, flags: qtool.OpenFlags{Unmap: true}}, objects: objects.NewRegistry()}
	g := &qtool.Getopt{
		Prog: prog, Args: args, Short: "hVc:d:f:rsnCmkt:T:Ui:", Stderr: stderr,
		Long: []qtool.LongOption{
			qtool.Opt("help", false, 'h'), qtool.Opt("version", false, 'V'), qtool.Opt("cmd", true, 'c'), qtool.Opt("format", true, 'f'),
			qtool.Opt("read-only", false, 'r'), qtool.Opt("snapshot", false, 's'), qtool.Opt("nocache", false, 'n'),
			qtool.Opt("copy-on-read", false, 'C'), qtool.Opt("misalign", false, 'm'), qtool.Opt("native-aio", false, 'k'),
			qtool.Opt("aio", true, 'i'), qtool.Opt("discard", true, 'd'), qtool.Opt("cache", true, 't'), qtool.Opt("trace", true, 'T'),
			qtool.Opt("object", true, 'o'), qtool.Opt("image-opts", false, 'I'), qtool.Opt("force-share", false, 'U'),
			qtool.Opt("add-fd", true, 'A'),
		},
		Dash: []qtool.LongOption{qtool.Opt("add-fd", true, 'A')},
	}
	fail := func(format string, a ...any) (*ioOptions, int, bool) {
		fmt.Fprintf(stderr, prog+": "+format+"\n", a...)
		return nil, 1, true
	}
	for {
		c, arg := g.Next()
		switch c {
		case 0:
			switch len(g.Operands) {
			case 0:
			case 1:
				o.open.flags.File, o.haveFile = g.Operands[0], true
			default:
				io.WriteString(stdout, ioUsage)
				return nil, 1, true
			}
			if o.open.flags.ImageOpts && o.open.flags.Format != "" {
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
		case 'V':
			// As qemu-io: the version, at once, whatever follows.
			o.version = true
			return o, 0, false
		case 'f':
			o.open.flags.Format = arg
		case 'r':
			o.open.flags.ReadOnly = true
		case 'n':
			o.open.flags.NoCache, o.open.writethrough = true, false
		case 't':
			// bdrv_parse_cache_mode: replaces what -n or an earlier -t set.
			wt, ok := o.open.flags.SetCacheMode(arg)
			if !ok {
				return fail("Invalid cache option: %s", arg)
			}
			o.open.writethrough = wt
		case 'd':
			switch arg {
			case "off", "ignore":
				o.open.flags.Unmap = false
			case "on", "unmap":
				o.open.flags.Unmap = true
			default:
				return fail("Invalid discard option: %s", arg)
			}
		case 'U':
			o.open.flags.ForceShare = true
		case 'I':
			o.open.flags.ImageOpts = true
		case 'A':
			o.addFds = append(o.addFds, cmdline.Occurrence{Name: "add-fd", Value: arg})
		case 'i':
			if !validAIO(arg) {
				return fail("Invalid aio option: %s", arg)
			}
			o.open.aio = arg
		case 'k':
			o.open.aio = "native"
		case 's':
			o.open.snapshot = true
		case 'C':
			o.open.copyOnRead = true
		case 'm', 'T':
			// -m only moves qemu-io's buffers in memory; -T enables
			// tracepoints minivmm does not have.
		case 'o':
			if err := addObject(o.objects, arg); err != nil {
				return fail("%s", err)
			}
		}
	}
}

// Run is "minivmm io": it opens the image, runs the -c commands (or
// those read from stdin) and closes everything. It returns the exit
// status: 1 when anything failed (closing the image included), as
// qemu-io's.
func Run(p qtool.Program, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o, code, done := parseIOArgs(p.Name, args, stdout, stderr)
	if done {
		return code
	}
	if o.version {
		// qemu-io prints its version and exits, whatever else was given.
		p.PrintVersion(stdout)
		return 0
	}
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	if err := cmdline.AddFds(reg, o.addFds); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", p.Name, err)
		return 1
	}
	out := qtool.NewStdout(stdout)
	t := &ioTool{prog: p.Name, setup: p.Setup, out: out, stderr: stderr, reg: reg, objects: o.objects, imageOpts: o.open.flags.ImageOpts}
	code = t.run(o, stdin)
	t.waitAIO()
	out.Flush()
	// What a format holds back (qcow2's lazy refcounts) is written at
	// close: a failure there fails the run, where qemu-io only prints it.
	if t.closeImage() != nil {
		code = 1
	}
	return code
}

// run opens the image, if one was named, and runs the commands.
func (t *ioTool) run(o *ioOptions, stdin io.Reader) int {
	if o.haveFile && t.openFile(&o.open) != nil {
		return 1
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
		t.printf("%s> ", t.prog)
		t.out.Flush()
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
