package iotool

import (
	"fmt"

	"minivmm/block"
	"minivmm/internal/qtool"
)

// reopen changes the open image's options through the block layer's
// transactional reopen (what qemu-io's bdrv_reopen is): the options the
// image was opened with, changed by -r/-w, -c and -o. Going read-only
// drops the write permission first, as qemu-io does.
func (t *ioTool) reopen(argv []string) error {
	ct := findCommand("reopen")
	g := t.getopt(argv, "c:o:rw")
	info := t.node.Info()
	readOnly, hasRW, hasCache := info.ReadOnly, false, false
	cache := qtool.OpenFlags{NoCache: info.Direct, NoFlush: info.NoFlush}
	writethrough := t.writethrough
	var extra block.Options
	for {
		c, arg := g.Next()
		if c == 0 {
			break
		}
		switch c {
		case 'c':
			wt, ok := cache.SetCacheMode(arg)
			if !ok {
				fmt.Fprintf(t.stderr, "%s: Invalid cache option: %s\n", t.prog, arg)
				return errCommand
			}
			writethrough, hasCache = wt, true
		case 'o':
			if err := t.addKeyval(&extra, arg); err != nil {
				return errCommand
			}
		case 'r', 'w':
			if hasRW {
				fmt.Fprintf(t.stderr, "%s: Only one -r/-w option may be given\n", t.prog)
				return errCommand
			}
			readOnly, hasRW = c == 'r', true
		default:
			return t.usage(ct)
		}
	}
	if len(g.Operands) != 0 {
		return t.usage(ct)
	}
	if extra == nil {
		extra = block.Options{}
	}
	if _, set := extra["read-only"]; set {
		if hasRW {
			fmt.Fprintf(t.stderr, "%s: Cannot set both -r/-w and 'read-only'\n", t.prog)
			return errCommand
		}
		readOnly, _ = extra.Bool("read-only", readOnly)
	} else {
		extra["read-only"] = readOnly
	}
	if c, _ := extra.Object("cache"); c != nil {
		if hasCache {
			fmt.Fprintf(t.stderr, "%s: Cannot set both -c and the cache options\n", t.prog)
			return errCommand
		}
	} else {
		extra["cache"] = block.Options{"direct": cache.NoCache, "no-flush": cache.NoFlush}
	}
	t.waitAIO()
	if readOnly && t.writer != nil {
		err := t.g.Detach(t.writer)
		t.writer = nil
		if err != nil {
			fmt.Fprintf(t.stderr, "%s: %s\n", t.prog, qtool.Message(err))
			return errCommand
		}
	}
	if err := t.checkReopenKeys(extra); err != nil {
		fmt.Fprintf(t.stderr, "%s: %s\n", t.prog, err)
		return errCommand
	}
	if !sameNodeName(extra, t.node) {
		fmt.Fprintf(t.stderr, "%s: Cannot change the option 'node-name'\n", t.prog)
		return errCommand
	}
	if f, _ := extra.Object("file"); t.probed && !sameNodeName(f, t.node.Child("file")) {
		// The probed file is an entry of its own (reopenOptions).
		fmt.Fprintf(t.stderr, "%s: Cannot change the option 'node-name'\n", t.prog)
		return errCommand
	}
	list, opts := t.reopenOptions(extra)
	if err := t.g.ReopenKeepOld(list); err != nil {
		fmt.Fprintf(t.stderr, "%s: %s\n", t.prog, qtool.Message(err))
		return errCommand
	}
	t.opts, t.writethrough = opts, writethrough
	return nil
}

// reopenOptions are the node's options with extra over them, naming the
// node and its children as a reopen must. A probed image's file was
// opened as a node of its own before the format over it: it is reopened
// in the same transaction, taking the format's generic options as an
// inline child would.
// It also returns the node's options once reopened.
func (t *ioTool) reopenOptions(extra block.Options) ([]block.Options, block.Options) {
	opts := block.Options{}
	if t.opts != nil {
		opts = t.opts.Clone()
	} else {
		opts["driver"] = t.node.Driver()
		if f := t.node.Child("file"); f != nil {
			opts["file"] = f.Name()
		}
	}
	var fix func(block.Options)
	if drv, ok := t.g.LookupDriver(t.node.Driver()); ok && drv.JoinOptions != nil {
		fix = drv.JoinOptions(extra, opts)
	}
	qtool.MergeOptions(opts, extra)
	if fix != nil {
		fix(opts)
	}
	opts["node-name"] = t.node.Name()
	if b := t.node.Child("backing"); b != nil {
		if _, given := opts["backing"]; !given {
			opts["backing"] = b.Name()
		}
	}
	file, inline := opts["file"].(block.Options)
	if !t.probed || !inline {
		return []block.Options{opts}, opts
	}
	child := t.node.Child("file")
	file = file.Clone()
	own, _ := extra.Object("file")
	for _, k := range []string{"read-only", "cache", "discard", "force-share"} {
		if _, set := own[k]; set {
			continue
		}
		if v, set := opts[k]; set {
			file[k] = v
		} else {
			delete(file, k)
		}
	}
	kept := opts.Clone()
	kept["file"] = file.Clone()
	file["node-name"] = child.Name()
	opts["file"] = child.Name()
	return []block.Options{file, opts}, kept
}

// checkReopenKeys refuses an option the node's driver does not have as
// QEMU's bdrv_reopen does (it finds it left over, so unchanged-able).
func (t *ioTool) checkReopenKeys(extra block.Options) error {
	drv, ok := t.g.LookupDriver(t.node.Driver())
	if !ok {
		return nil
	}
	schema, _ := drv.Schema()
	for k := range extra {
		if _, ok := schema[k]; !ok {
			return fmt.Errorf("Cannot change the option '%s'", k)
		}
	}
	return nil
}

// sameNodeName: opts name n, or no node at all (qemu-io's reopen takes
// an unchanged node-name).
func sameNodeName(opts block.Options, n *block.Node) bool {
	if n == nil {
		return true
	}
	name, err := opts.String("node-name", n.Name())
	return err == nil && name == n.Name()
}
