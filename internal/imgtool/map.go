package imgtool

// minivmm img map: qemu-img map over minivmm's block layer.

import (
	"fmt"
	"io"
	"strings"

	"minivmm/block"
	"minivmm/internal/qtool"
)

func init() {
	imgCommands["map"] = imgCommand{run: runImgMap,
		usage: "map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] [-add-fd fd=N,set=M] filename"}
}

// mapEntry is one extent as qemu-img map shows it (its MapEntry).
type mapEntry struct {
	start, length int64
	depth         int64
	present       bool
	zero, data    bool
	hasOffset     bool
	offset        int64
	filename      string
}

// chainStatus is the status of the range at off as qemu-img's
// get_block_status sees it: from the top of the chain (filters skipped)
// down to the first node that has the range allocated, or the bottom.
func chainStatus(top *block.Node, off, n int64) (mapEntry, error) {
	st, l, err := block.StatusAbove(top.SkipFilters(), nil, off, n)
	if err != nil {
		return mapEntry{}, err
	}
	e := mapEntry{start: off, length: l, depth: int64(st.Depth), present: st.Present, zero: st.Zero, data: st.Data}
	if st.Present && st.Offset >= 0 {
		e.hasOffset, e.offset = true, st.Offset
		// The offset is in the node that holds the data: a qcow2 data
		// file, else the file child.
		file := st.Layer.Child("data-file")
		if file == nil {
			file = st.Layer.Child("file")
		}
		if file == nil {
			file = st.Layer
		}
		e.filename = file.Filename()
	}
	return e, nil
}

// mergeable is qemu-img's entry_mergeable.
func (c *mapEntry) mergeable(next *mapEntry) bool {
	if c.length == 0 || c.zero != next.zero || c.data != next.data || c.depth != next.depth ||
		c.present != next.present || c.hasOffset != next.hasOffset || c.filename != next.filename {
		return false
	}
	return !c.hasOffset || c.offset+c.length == next.offset
}

// dump prints e as qemu-img's dump_map_entry; false after an error.
func (me *mapEntry) dump(b *strings.Builder, output string, next *mapEntry, e *env) bool {
	if output == "json" {
		fmt.Fprintf(b, `{ "start": %d, "length": %d, "depth": %d, "present": %t, "zero": %t, "data": %t`,
			me.start, me.length, me.depth, me.present, me.zero, me.data)
		if me.hasOffset {
			fmt.Fprintf(b, `, "offset": %d`, me.offset)
		}
		b.WriteString("}")
		if next != nil {
			b.WriteString(",\n")
		}
		return true
	}
	if me.data && !me.hasOffset {
		fmt.Fprintf(e.stderr, "%s: File contains external, encrypted or compressed clusters.\n", e.prog)
		return false
	}
	if me.data && !me.zero {
		fmt.Fprintf(b, "%-16s%-16s%-16s%s\n", hexAlt(me.start), hexAlt(me.length), hexAlt(me.offset), me.filename)
	}
	// The human format does not tell zero, ZERO and ZERO|DATA apart.
	if next != nil && (!next.data || next.zero) {
		next.data, next.zero = false, true
	}
	return true
}

// hexAlt is C's "%#x": no 0x for zero.
func hexAlt(v int64) string {
	if v == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", v)
}

func runImgMap(e *env, args []string) int {
	stdout, stderr := e.stdout, e.stderr
	c := imgCommonOpts{output: "human"}
	start, maxLength := int64(0), int64(-1)
	filename, rc, ok := c.parse(e, args, []qtool.LongOption{qtool.Opt("start-offset", true, 's'), qtool.Opt("max-length", true, 'l')},
		func(o rune, arg string) bool {
			var ok bool
			if o == 's' {
				start, ok = e.cvtnum("start offset", arg)
			} else {
				maxLength, ok = e.cvtnum("max length", arg)
			}
			return ok
		})
	if !ok {
		return rc
	}
	im, ok := e.openImage(filename, c.format, c.imageOpts, c.forceShare, c.addFds)
	if !ok {
		return 1
	}
	defer im.close()
	var b strings.Builder
	flush := func() { io.WriteString(stdout, b.String()); b.Reset() }
	defer flush()
	if c.output == "json" {
		b.WriteString("[")
	} else {
		fmt.Fprintf(&b, "%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File")
	}
	length := im.node.Length()
	if maxLength != -1 {
		length = min(start+maxLength, length)
	}
	curr := mapEntry{start: start}
	for curr.start+curr.length < length {
		off := curr.start + curr.length
		next, err := chainStatus(im.node, off, min(1<<30, length-off))
		if err != nil {
			flush()
			fmt.Fprintf(stderr, "%s: Could not read file metadata: %s\n", e.prog, qtool.Strerror(err))
			return 1
		}
		if curr.mergeable(&next) {
			curr.length += next.length
			continue
		}
		if curr.length > 0 && !curr.dump(&b, c.output, &next, e) {
			flush()
			return 1
		}
		curr = next
	}
	if !curr.dump(&b, c.output, nil, e) {
		return 1
	}
	if c.output == "json" {
		b.WriteString("]\n")
	}
	return 0
}
