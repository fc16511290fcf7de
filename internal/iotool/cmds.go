package iotool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/objects"
	"minivmm/block/qcow2"
	"minivmm/internal/qtool"
	"minivmm/qemuopen"
)

// ioTool is one run of minivmm io: the open image and the state its
// commands share.
type ioTool struct {
	prog         string // the name messages start with
	setup        func(*block.Graph) error
	out          *qtool.Stdout
	stderr       io.Writer
	g            *block.Graph
	node         *block.Node    // nil: no file open
	writer       *block.Backend // holds write permission; nil: not taken
	forceShare   bool
	reg          *qemuopen.Registry
	objects      *objects.Registry // --object's
	imageOpts    bool              // --image-opts: open's path is an option string
	opts         block.Options     // the node's options, for reopen
	probed       bool              // the format was probed: the file is a node of its own
	writethrough bool              // flush after each write (cache=writethrough, directsync)
	probedRaw    bool              // raw by probing: block 0 guarded
	copyOnRead   bool              // -C: reads copy what they read from below into the node
	aio          sync.WaitGroup    // aio_read and aio_write in flight
	quit         bool
}

func (t *ioTool) printf(format string, a ...any) { fmt.Fprintf(t.out, format, a...) }

// errCommand is a failed command; what went wrong has been printed.
var errCommand = errors.New("command failed")

// maxRequest is QEMU's BDRV_REQUEST_MAX_BYTES, the largest request.
const maxRequest = 2147483136

// ioCommand is one entry of qemu-io's command table.
type ioCommand struct {
	name, alt      string
	argmin, argmax int // operands counted with options; -1: no limit
	args           string
	noArgs         bool // qemu-io's args is NULL: help shows nothing there
	oneline        string
	help           string
	global         bool // runs with no file open
	write          bool // needs write permission
	run            func(t *ioTool, argv []string) error
}

// ioCommands is sorted by name, as qemu-io lists its commands.
var ioCommands []*ioCommand

func init() {
	ioCommands = []*ioCommand{
		{name: "abort", noArgs: true, oneline: "simulate a program crash using abort(3)", global: true, run: (*ioTool).abort},
		{name: "aio_flush", noArgs: true, oneline: "completes all outstanding aio requests", run: (*ioTool).aioFlush},
		{name: "aio_read", argmin: 2, argmax: -1, args: "[-Ciqv] [-P pattern] off len [len..]",
			oneline: "asynchronously reads a number of bytes", help: aioReadHelp, run: (*ioTool).aioRead},
		{name: "aio_write", argmin: 2, argmax: -1, args: "[-Cfiquz] [-P pattern] off len [len..]",
			oneline: "asynchronously writes a number of bytes", help: aioWriteHelp, write: true, run: (*ioTool).aioWrite},
		{name: "alloc", alt: "a", argmin: 1, argmax: 2, args: "offset [count]",
			oneline: "checks if offset is allocated in the file", run: (*ioTool).alloc},
		{name: "break", argmin: 2, argmax: 2, args: "event tag",
			oneline: "sets a breakpoint on event and tags the stopped request as tag", run: (*ioTool).breakCmd},
		{name: "close", alt: "c", noArgs: true, oneline: "close the current open file", run: (*ioTool).closeCmd},
		{name: "discard", alt: "d", argmin: 2, argmax: -1, args: "[-Cq] off len",
			oneline: "discards a number of bytes at a specified offset", help: discardHelp, write: true, run: (*ioTool).discard},
		{name: "flush", alt: "f", noArgs: true, oneline: "flush all in-core file state to disk", run: (*ioTool).flush},
		{name: "help", alt: "?", argmax: 1, args: "[command]", oneline: "help for one or all commands",
			global: true, run: (*ioTool).help},
		{name: "info", alt: "i", noArgs: true, oneline: "prints information about the current file", run: (*ioTool).info},
		{name: "length", alt: "l", noArgs: true, oneline: "gets the length of the current file", run: (*ioTool).length},
		{name: "map", oneline: "prints the allocated areas of a file", run: (*ioTool).mapCmd},
		{name: "open", alt: "o", argmin: 1, argmax: -1, args: "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]",
			oneline: "open the file specified by path", help: openHelp, global: true, run: (*ioTool).openCmd},
		{name: "quit", alt: "q", argmin: -1, argmax: -1, noArgs: true, oneline: "exit the program", global: true,
			run: func(t *ioTool, _ []string) error { t.quit = true; return nil }},
		{name: "read", alt: "r", argmin: 2, argmax: -1, args: "[-abCqv] [-P pattern [-s off] [-l len]] off len",
			oneline: "reads a number of bytes at a specified offset", help: readHelp, run: (*ioTool).read},
		{name: "readv", argmin: 2, argmax: -1, args: "[-Cqv] [-P pattern] off len [len..]",
			oneline: "reads a number of bytes at a specified offset", help: readvHelp, run: (*ioTool).readv},
		{name: "remove_break", argmin: 1, argmax: 1, args: "tag",
			oneline: "remove a breakpoint by tag", run: (*ioTool).removeBreak},
		{name: "reopen", argmin: 0, argmax: -1, args: "[(-r|-w)] [-c cache] [-o options]",
			oneline: "reopens an image with new options", help: reopenHelp, run: (*ioTool).reopen},
		{name: "resume", argmin: 1, argmax: 1, args: "tag",
			oneline: "resumes the request tagged as tag", run: (*ioTool).resume},
		{name: "sigraise", argmin: 1, argmax: 1, args: "signal",
			oneline: "raises a signal", help: sigraiseHelp, global: true, run: (*ioTool).sigraise},
		{name: "sleep", argmin: 1, argmax: 1, noArgs: true,
			oneline: "waits for the given value in milliseconds", global: true, run: (*ioTool).sleep},
		{name: "truncate", alt: "t", argmin: 1, argmax: 3, args: "[-m prealloc_mode] off",
			oneline: "truncates the current file at the given offset", write: true, run: (*ioTool).truncate},
		{name: "wait_break", argmin: 1, argmax: 1, args: "tag",
			oneline: "waits for the suspension of a request", run: (*ioTool).waitBreak},
		{name: "write", alt: "w", argmin: 2, argmax: -1, args: "[-bcCfnquz] [-P pattern | -s source_file] off len",
			oneline: "writes a number of bytes at a specified offset", help: writeHelp, write: true, run: (*ioTool).write},
		{name: "writev", argmin: 2, argmax: -1, args: "[-Cfq] [-P pattern] off len [len..]",
			oneline: "writes a number of bytes at a specified offset", help: writevHelp, write: true, run: (*ioTool).writev},
	}
}

const readHelp = `
 reads a range of bytes from the given offset

 Example:
 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file

 Reads a segment of the currently open file, optionally dumping it to the
 standard output stream (with -v option) for subsequent inspection.
 -b, -- read from the VM state rather than the virtual disk
 -C, -- report statistics in a machine parsable format
 -l, -- length for pattern verification (only with -P)
 -p, -- ignored for backwards compatibility
 -P, -- use a pattern to verify read data
 -q, -- quiet mode, do not show I/O statistics
 -s, -- start offset for pattern verification (only with -P)
 -v, -- dump buffer to standard output

`

const writeHelp = `
 writes a range of bytes from the given offset

 Example:
 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file

 Writes into a segment of the currently open file, using a buffer
 filled with a set pattern (0xcdcdcdcd).
 -b, -- write to the VM state rather than the virtual disk
 -c, -- write compressed data with blk_write_compressed
 -f, -- use Force Unit Access semantics
 -n, -- with -z, don't allow slow fallback
 -p, -- ignored for backwards compatibility
 -P, -- use different pattern to fill file
 -s, -- use a pattern file to fill the write buffer
 -C, -- report statistics in a machine parsable format
 -q, -- quiet mode, do not show I/O statistics
 -u, -- with -z, allow unmapping
 -z, -- write zeroes using blk_co_pwrite_zeroes

`

const discardHelp = `
 discards a range of bytes from the given offset

 Example:
 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the file

 Discards a segment of the currently open file.
 -C, -- report statistics in a machine parsable format
 -q, -- quiet mode, do not show I/O statistics

`

func findCommand(name string) *ioCommand {
	for _, c := range ioCommands {
		if c.name == name || c.alt != "" && c.alt == name {
			return c
		}
	}
	return nil
}

// breakline splits a command line at spaces (only spaces, and without
// quoting), as qemu-io does.
func breakline(line string) []string {
	var argv []string
	for _, f := range strings.Split(line, " ") {
		if f != "" {
			argv = append(argv, f)
		}
	}
	return argv
}

// command runs one command line; it returns errCommand when the command
// failed (which makes the exit status 1).
func (t *ioTool) command(line string) error {
	argv := breakline(line)
	if len(argv) == 0 {
		return nil
	}
	ct := findCommand(argv[0])
	if ct == nil {
		fmt.Fprintf(t.stderr, "command \"%s\" not found\n", argv[0])
		return errCommand
	}
	if !ct.global && t.node == nil {
		fmt.Fprintf(t.stderr, "no file open, try 'help open'\n")
		return errCommand
	}
	if n := len(argv) - 1; n < ct.argmin || ct.argmax != -1 && n > ct.argmax {
		switch {
		case ct.argmax == -1:
			fmt.Fprintf(t.stderr, "bad argument count %d to %s, expected at least %d arguments\n", n, argv[0], ct.argmin)
		case ct.argmin == ct.argmax:
			fmt.Fprintf(t.stderr, "bad argument count %d to %s, expected %d arguments\n", n, argv[0], ct.argmin)
		default:
			fmt.Fprintf(t.stderr, "bad argument count %d to %s, expected between %d and %d arguments\n", n, argv[0], ct.argmin, ct.argmax)
		}
		return errCommand
	}
	// Like qemu-io, take write permission when a command first needs it
	// (with -r the node is read-only and refuses).
	if ct.write && t.writer == nil {
		b, err := t.g.Attach("", t.node, block.Perm{Write: true, ShareWrite: t.forceShare})
		if err != nil {
			fmt.Fprintf(t.stderr, "%s: %s\n", t.prog, qtool.Message(err))
			return errCommand
		}
		t.writer = b
	}
	return ct.run(t, argv)
}

// offsetCount reads a command's "offset count" operands, saying what is
// wrong as qemu-io does.
func (t *ioTool) offsetCount(operands []string) (off, count int64, ok bool) {
	if off, ok = t.num(operands[0]); !ok {
		return 0, 0, false
	}
	if count, ok = t.num(operands[1]); !ok {
		return 0, 0, false
	}
	if count > maxRequest {
		t.printf("length cannot exceed %d, given %s\n", maxRequest, operands[1])
		return 0, 0, false
	}
	return off, count, true
}

func (t *ioTool) getopt(argv []string, optstring string) *qtool.Getopt {
	return &qtool.Getopt{Prog: argv[0], Args: argv[1:], Short: optstring, Stderr: t.stderr}
}

// usage is qemu-io's one-line usage of a command, printed when its
// options or operands are wrong.
func (t *ioTool) usage(ct *ioCommand) error {
	t.printf("%s %s -- %s\n", ct.name, ct.args, ct.oneline)
	return errCommand
}

// num reads an offset or length operand, printing qemu-io's complaint.
func (t *ioTool) num(s string) (int64, bool) {
	n, err := cvtnum(s)
	if err != nil {
		t.printf("%s\n", err)
		return 0, false
	}
	return n, true
}

// parsePattern reads a pattern byte as qemu-io does (C's strtol with
// base 0: decimal, 0x hex or 0 octal, optionally signed), 0 to 255.
func (t *ioTool) parsePattern(s string) (byte, bool) {
	p := strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if p != "" && (p[0] == '+' || p[0] == '-') {
		neg, p = p[0] == '-', p[1:]
	}
	base := 10
	switch {
	case len(p) > 2 && p[0] == '0' && p[1]|0x20 == 'x' && digitValue(p[2]) < 16:
		base, p = 16, p[2:]
	case p != "" && p[0] == '0':
		base = 8
	}
	v, digits := 0, 0
	for ; digits < len(p) && digitValue(p[digits]) < base; digits++ {
		v = min(v*base+digitValue(p[digits]), 1<<20) // anything above 255 is refused
	}
	ok := digits == len(p) && (digits > 0 || s == "") && (!neg || v == 0) && v <= 255
	if !ok {
		t.printf("%s is not a valid pattern byte\n", s)
		return 0, false
	}
	return byte(v), true
}

func digitValue(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c|0x20 >= 'a' && c|0x20 <= 'z':
		return int(c|0x20-'a') + 10
	}
	return 99
}

// inRange is the block layer's request check, done before allocating a
// buffer for a request that cannot succeed.
func (t *ioTool) inRange(off, n int64) bool {
	length := t.node.Length()
	return off >= 0 && n >= 0 && off <= length && length-off >= n
}

func (t *ioTool) read(argv []string) error {
	ct := findCommand("read")
	g := t.getopt(argv, "bCl:pP:qs:v")
	var vmstate, machine, quiet, verbose, pflag, sflag, lflag bool
	var pattern byte
	var pOff, pCount int64
	for {
		c, arg := g.Next()
		if c == 0 {
			break
		}
		var ok bool
		switch c {
		case 'b':
			vmstate = true
		case 'C':
			machine = true
		case 'l':
			lflag = true
			if pCount, ok = t.num(arg); !ok {
				return errCommand
			}
		case 'p': // ignored for backwards compatibility
		case 'P':
			pflag = true
			if pattern, ok = t.parsePattern(arg); !ok {
				return errCommand
			}
		case 'q':
			quiet = true
		case 's':
			sflag = true
			if pOff, ok = t.num(arg); !ok {
				return errCommand
			}
		case 'v':
			verbose = true
		default:
			return t.usage(ct)
		}
	}
	if len(g.Operands) != 2 {
		return t.usage(ct)
	}
	off, count, ok := t.offsetCount(g.Operands)
	if !ok {
		return errCommand
	}
	if !pflag && (lflag || sflag) {
		return t.usage(ct)
	}
	if !lflag {
		pCount = count - pOff
	}
	if pCount < 0 || pCount+pOff > count {
		t.printf("pattern verification range exceeds end of read data\n")
		return errCommand
	}
	if vmstate && !t.sectorAligned(off, count) {
		return errCommand
	}

	var buf []byte
	var err error
	start := time.Now()
	switch {
	case vmstate:
		buf = make([]byte, count)
		_, err = t.node.ReadVMState(buf, off)
	case !t.inRange(off, count):
		err = unix.EIO
	default:
		buf = make([]byte, count)
		err = t.readAt(buf, off)
	}
	elapsed := time.Since(start)
	if err != nil {
		t.printf("read failed: %s\n", qtool.Strerror(err))
		return errCommand
	}
	var ret error
	if pflag && bytes.Count(buf[pOff:pOff+pCount], []byte{pattern}) != int(pCount) {
		t.printf("Pattern verification failed at offset %d, %d bytes\n", off+pOff, pCount)
		ret = errCommand
	}
	if quiet {
		return ret
	}
	if verbose {
		t.hexdump(buf, off)
	}
	t.report("read", elapsed, off, count, count, 1, machine)
	return ret
}

// sectorAligned is the check of -b (and write -c): both multiples of 512.
func (t *ioTool) sectorAligned(off, count int64) bool {
	if off%512 != 0 {
		t.printf("%d is not a sector-aligned value for 'offset'\n", off)
		return false
	}
	if count%512 != 0 {
		t.printf("%d is not a sector-aligned value for 'count'\n", count)
		return false
	}
	return true
}

func (t *ioTool) write(argv []string) error {
	ct := findCommand("write")
	g := t.getopt(argv, "bcCfnpP:qs:uz")
	var vmstate, compressed, machine, fua, noFallback, quiet, unmap, zeroes, pflag, sflag bool
	pattern := byte(0xcd)
	var source string
	for {
		c, arg := g.Next()
		if c == 0 {
			break
		}
		switch c {
		case 'b':
			vmstate = true
		case 'c':
			compressed = true
		case 'C':
			machine = true
		case 'f':
			fua = true
		case 'n':
			noFallback = true
		case 'p': // ignored for backwards compatibility
		case 'P':
			pflag = true
			var ok bool
			if pattern, ok = t.parsePattern(arg); !ok {
				return errCommand
			}
		case 'q':
			quiet = true
		case 's':
			sflag, source = true, arg
		case 'u':
			unmap = true
		case 'z':
			zeroes = true
		default:
			return t.usage(ct)
		}
	}
	if len(g.Operands) != 2 {
		return t.usage(ct)
	}
	switch {
	case vmstate && zeroes:
		t.printf("-b and -z cannot be specified at the same time\n")
		return errCommand
	case fua && (vmstate || compressed):
		t.printf("-f and -b or -c cannot be specified at the same time\n")
		return errCommand
	case noFallback && !zeroes:
		t.printf("-n requires -z to be specified\n")
		return errCommand
	case unmap && !zeroes:
		t.printf("-u requires -z to be specified\n")
		return errCommand
	case btoi(zeroes)+btoi(pflag)+btoi(sflag) > 1:
		t.printf("Only one of -z, -P, and -s can be specified at the same time\n")
		return errCommand
	}
	off, ok := t.num(g.Operands[0])
	if !ok {
		return errCommand
	}
	count, ok := t.num(g.Operands[1])
	if !ok {
		return errCommand
	}
	if count > maxRequest && !noFallback {
		t.printf("length cannot exceed %d without -n, given %s\n", maxRequest, g.Operands[1])
		return errCommand
	}
	if (vmstate || compressed) && !t.sectorAligned(off, count) {
		return errCommand
	}

	var buf []byte
	if !zeroes {
		switch {
		case sflag:
			if buf, ok = t.bufferFromFile(source, count); !ok {
				return errCommand
			}
		case vmstate || t.inRange(off, count): // else it fails: no buffer needed
			buf = bytes.Repeat([]byte{pattern}, int(count))
		}
	}
	start := time.Now()
	var err error
	switch {
	case vmstate:
		_, err = t.node.WriteVMState(buf, off)
	case !t.inRange(off, count):
		err = unix.EIO
	case zeroes && noFallback:
		err = t.node.WriteZeroesFast(off, count, unmap)
	case zeroes:
		err = t.node.WriteZeroes(off, count, unmap)
	case compressed:
		err = t.writeCompressed(buf, off)
	default:
		if err = t.guardProbed(buf, off, count); err == nil {
			_, err = t.node.WriteAt(buf, off)
		}
	}
	if err == nil && (fua || t.writethrough) {
		err = t.node.Flush()
	}
	elapsed := time.Since(start)
	if err != nil {
		t.printf("write failed: %s\n", qtool.Strerror(err))
		return errCommand
	}
	if !quiet {
		t.report("wrote", elapsed, off, count, count, 1, machine)
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// bufferFromFile fills count bytes with the contents of name, repeated
// as often as needed (write -s).
func (t *ioTool) bufferFromFile(name string, count int64) ([]byte, bool) {
	f, err := os.Open(name)
	if err != nil {
		fmt.Fprintf(t.stderr, "%s: %s\n", name, qtool.Strerror(err))
		return nil, false
	}
	defer f.Close()
	buf := make([]byte, count)
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		fmt.Fprintf(t.stderr, "%s: %s\n", name, qtool.Strerror(err))
		return nil, false
	}
	if n == 0 {
		fmt.Fprintf(t.stderr, "%s: file is empty\n", name)
		return nil, false
	}
	for p := n; p < len(buf); p += n {
		copy(buf[p:], buf[:n])
	}
	return buf, true
}

func (t *ioTool) discard(argv []string) error {
	ct := findCommand("discard")
	g := t.getopt(argv, "Cq")
	var machine, quiet bool
	for {
		c, _ := g.Next()
		if c == 0 {
			break
		}
		switch c {
		case 'C':
			machine = true
		case 'q':
			quiet = true
		default:
			return t.usage(ct)
		}
	}
	if len(g.Operands) != 2 {
		return t.usage(ct)
	}
	off, count, ok := t.offsetCount(g.Operands)
	if !ok {
		return errCommand
	}
	start := time.Now()
	err := t.node.Discard(off, count)
	elapsed := time.Since(start)
	if err != nil {
		t.printf("discard failed: %s\n", qtool.Strerror(err))
		return errCommand
	}
	if !quiet {
		t.report("discard", elapsed, off, count, count, 1, machine)
	}
	return nil
}

// flush prints nothing, even when it fails, as qemu-io's.
func (t *ioTool) flush([]string) error {
	if t.node.Flush() != nil {
		return errCommand
	}
	return nil
}

// infoDrivers are the drivers for which QEMU's bdrv_get_info answers
// (cluster size and VM state offset, both 0 for these); for the others
// info stops after the format name and fails without a word.
var infoDrivers = map[string]bool{"raw": true, "file": true}

func (t *ioTool) info([]string) error {
	name := t.node.Driver()
	t.printf("format name: %s\n", name)
	if drv, ok := block.LookupDriver(name); ok && !drv.Format {
		t.printf("format name: %s\n", name) // a protocol's protocol_name, the same
	}
	if fs, ok := t.node.Image().(interface{ FormatSpecific() qcow2.FormatInfo }); ok {
		t.qcow2Info(fs.FormatSpecific())
		return nil
	}
	if !infoDrivers[name] {
		return errCommand
	}
	t.printf("cluster size: %s\n", cvtstr(0))
	t.printf("vm state offset: %s\n", cvtstr(0))
	return nil
}

func (t *ioTool) length([]string) error {
	t.printf("%s\n", cvtstr(float64(t.node.Length())))
	return nil
}

// mapCmd prints the image as runs of allocated and unallocated bytes.
func (t *ioTool) mapCmd([]string) error {
	var off int64
	for remaining := t.node.Length(); remaining > 0; {
		allocated, n, err := t.allocatedRun(off, remaining)
		if err != nil {
			fmt.Fprintf(t.stderr, "%s: Failed to get allocation status: %s\n", t.prog, qtool.Strerror(err))
			return errCommand
		}
		if n == 0 {
			fmt.Fprintf(t.stderr, "%s: Unexpected end of image\n", t.prog)
			return errCommand
		}
		what := "not allocated"
		if allocated {
			what = "    allocated"
		}
		t.printf("%s (0x%x) bytes %s at offset %s (0x%x)\n", cvtstr(float64(n)), n, what, cvtstr(float64(off)), off)
		off += n
		remaining -= n
	}
	return nil
}

// allocatedRun is how many bytes from off (at most n) share the
// allocation status of the first.
func (t *ioTool) allocatedRun(off, n int64) (bool, int64, error) {
	st, num, err := t.node.BlockStatus(off, n)
	if err != nil {
		return false, 0, err
	}
	total := num
	for num > 0 && total < n {
		next, m, err := t.node.BlockStatus(off+total, n-total)
		if err != nil || next.Allocated != st.Allocated || m == 0 {
			break
		}
		total += m
		num = m
	}
	return st.Allocated, total, nil
}

func (t *ioTool) help(argv []string) error {
	oneline := func(name string, ct *ioCommand) {
		t.printf("%s ", name)
		if !ct.noArgs {
			t.printf("%s ", ct.args)
		}
		t.printf("-- %s\n", ct.oneline)
	}
	if len(argv) < 2 {
		for _, ct := range ioCommands {
			oneline(ct.name, ct)
		}
		t.printf("\nUse 'help commandname' for extended help.\n")
		return nil
	}
	ct := findCommand(argv[1])
	if ct == nil {
		t.printf("command %s not found\n", argv[1])
		return errCommand
	}
	oneline(argv[1], ct)
	t.printf("%s", ct.help)
	return nil
}

// qcow2Info is info's answer for a qcow2 image (qcow2_get_info and
// qcow2_get_specific_info): the VM state lives past the last L1 entry
// the disk needs.
func (t *ioTool) qcow2Info(fi qcow2.FormatInfo) {
	l2Entries := fi.ClusterSize / 8
	if fi.ExtendedL2 {
		l2Entries = fi.ClusterSize / 16
	}
	perL1 := fi.ClusterSize * l2Entries
	vmState := (t.node.Length() + perL1 - 1) / perL1 * perL1
	t.printf("cluster size: %s\n", cvtstr(float64(fi.ClusterSize)))
	t.printf("vm state offset: %s\n", cvtstr(float64(vmState)))
	t.printf("Format specific information:\n")
	if fi.Version < 3 {
		t.printf("    compat: 0.10\n    compression type: %s\n    refcount bits: %d\n", fi.Compression, fi.RefcountBits)
		return
	}
	t.printf("    compat: 1.1\n    compression type: %s\n    lazy refcounts: %t\n    refcount bits: %d\n    corrupt: %t\n    extended l2: %t\n",
		fi.Compression, fi.LazyRefcounts, fi.RefcountBits, fi.Corrupt, fi.ExtendedL2)
}
