package iotool

import (
	"errors"
	"fmt"

	"minivmm/block"
	"minivmm/internal/qtool"
)

// openFile opens an image in a new graph, printing qemu-io's "can't
// open" on failure, with nothing left open.
func (t *ioTool) openFile(o *openOptions) error {
	if t.node != nil {
		fmt.Fprintf(t.stderr, "%s: file open already, try 'help close'\n", t.prog)
		return errCommand
	}
	t.g = block.NewGraph(t.reg)
	t.g.OnCorruption(qtool.CorruptionPrinter(t.stderr))
	t.g.OnWarning(qtool.WarningPrinter(t.stderr))
	t.g.SetObjects(t.objects)
	err := error(nil)
	if t.setup != nil {
		err = t.setup(t.g)
	}
	if err == nil {
		err = t.open(o)
	}
	if err != nil {
		where := ""
		if o.flags.File != "" && !o.flags.ImageOpts {
			where = " device " + o.flags.File
		}
		fmt.Fprintf(t.stderr, "%s: can't open%s: %s\n", t.prog, where, qtool.Message(err))
		t.g.Close()
		t.g, t.node, t.writer = nil, nil, nil
		return errCommand
	}
	return nil
}

// open opens the image as qemu-io's openfile: any probed format is
// taken, writable unless -r (a probed raw gets QEMU's warning and its
// guard on block 0, see guardProbed); -s puts a temporary overlay on it.
func (t *ioTool) open(o *openOptions) error {
	f := o.flags
	f.AIO = o.aio
	if o.copyOnRead && f.ReadOnly {
		return errors.New("Can't use copy-on-read on read-only device")
	}
	if o.snapshot {
		f.ReadOnly = true
	}
	opts, err := f.Options(t.g)
	if err != nil {
		return err
	}
	op, err := t.g.Open(opts, block.ProbeAny)
	if err != nil {
		return err
	}
	if op.ProbedRaw() && !f.ReadOnly {
		file, _ := opts.Object("file")
		name, _ := file.String("filename", f.File)
		qtool.ProbedRawWarning(t.stderr, name)
	}
	b, err := t.g.Attach("", op.Node, block.Perm{Write: !f.ReadOnly, ShareWrite: f.ForceShare})
	if err != nil {
		return err
	}
	t.probed = op.Probed
	if op.Probed {
		opts["driver"] = op.Format
	}
	t.node, t.opts, t.probedRaw, t.writer = op.Node, opts, op.ProbedRaw(), nil
	if !f.ReadOnly {
		t.writer = b
	}
	t.copyOnRead, t.writethrough, t.forceShare = o.copyOnRead, o.writethrough, f.ForceShare
	if o.snapshot {
		top, b, err := t.snapshotOverlay(op.Node)
		if err != nil {
			return err
		}
		t.node, t.opts, t.probedRaw, t.probed, t.writer = top, nil, false, false, b
	}
	return nil
}

// closeImage waits for asynchronous requests and closes the image,
// printing what closing it failed with.
func (t *ioTool) closeImage() error {
	t.waitAIO()
	if t.g == nil {
		return nil
	}
	msgs := qtool.CloseMessages(t.g.Close())
	for _, m := range msgs {
		fmt.Fprintf(t.stderr, "%s: %s\n", t.prog, m)
	}
	t.g, t.node, t.writer, t.opts = nil, nil, nil, nil
	if len(msgs) > 0 {
		return errCommand
	}
	return nil
}

func (t *ioTool) closeCmd([]string) error { return t.closeImage() }

// openCmd is qemu-io's open: the command line's options, each open with
// qemu-io's defaults (writethrough, discard=unmap: open_f starts from
// BDRV_O_UNMAP as main does).
func (t *ioTool) openCmd(argv []string) error {
	ct := findCommand("open")
	o := openOptions{writethrough: true, flags: qtool.OpenFlags{Unmap: true}}
	g := t.getopt(argv, "snCro:kt:d:i:U")
	for {
		c, arg := g.Next()
		if c == 0 {
			break
		}
		switch c {
		case 's':
			o.snapshot = true
		case 'n':
			o.flags.NoCache, o.writethrough = true, false
		case 'C':
			o.copyOnRead = true
		case 'r':
			o.flags.ReadOnly = true
		case 'k':
			o.aio = "native"
		case 't':
			wt, ok := o.flags.SetCacheMode(arg)
			if !ok {
				fmt.Fprintf(t.stderr, "%s: Invalid cache option: %s\n", t.prog, arg)
				return errCommand
			}
			o.writethrough = wt
		case 'd':
			switch arg {
			case "off", "ignore":
				o.flags.Unmap = false
			case "on", "unmap":
				o.flags.Unmap = true
			default:
				fmt.Fprintf(t.stderr, "%s: Invalid discard option: %s\n", t.prog, arg)
				return errCommand
			}
		case 'i':
			if !validAIO(arg) {
				fmt.Fprintf(t.stderr, "%s: Invalid aio option: %s\n", t.prog, arg)
				return errCommand
			}
			o.aio = arg
		case 'o':
			if t.imageOpts {
				t.printf("--image-opts and 'open -o' are mutually exclusive\n")
				return errCommand
			}
			if err := t.addKeyval(&o.flags.Extra, arg); err != nil {
				return errCommand
			}
		case 'U':
			o.flags.ForceShare = true
		default:
			return t.usage(ct)
		}
	}
	switch len(g.Operands) {
	case 0:
		if o.flags.Extra == nil {
			o.flags.Extra = block.Options{} // no file at all, not an empty name
		}
	case 1:
		if t.imageOpts {
			if err := t.addKeyval(&o.flags.Extra, g.Operands[0]); err != nil {
				return errCommand
			}
		} else {
			o.flags.File = g.Operands[0]
		}
	default:
		return t.usage(ct)
	}
	return t.openFile(&o)
}

// addKeyval parses an option string as qemu-io's QemuOpts do (see
// parseOpenOptions) into *opts, merged with what earlier ones gave,
// printing what is wrong as QEMU's qemu_opts_parse_noisily.
func (t *ioTool) addKeyval(opts *block.Options, s string) error {
	o, err := parseOpenOptions(s)
	if err == nil {
		for _, f := range shortBooleans(s) {
			fmt.Fprintf(t.stderr, "%s: %s\n", t.prog, shortBooleanWarning(f))
		}
	}
	if err != nil {
		fmt.Fprintf(t.stderr, "%s: %s\n", t.prog, err)
		return err
	}
	if *opts == nil {
		*opts = block.Options{}
	}
	for k, v := range o {
		(*opts)[k] = v
	}
	return nil
}
