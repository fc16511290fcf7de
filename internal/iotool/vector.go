package iotool

import (
	"bytes"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/internal/qtool"
)

// ioVector is the buffers of a vectored request, one per length
// operand, filled with pattern (qemu-io's create_iovec).
type ioVector struct {
	bufs  [][]byte
	size  int64
	whole []byte // the buffers, back to back
}

// newIOVector reads the length operands, saying what is wrong with them
// as qemu-io does.
func (t *ioTool) newIOVector(args []string, pattern byte) (*ioVector, bool) {
	lens := make([]int64, len(args))
	var total int64
	for i, a := range args {
		n, ok := t.num(a)
		if !ok {
			return nil, false
		}
		if n > maxRequest {
			t.printf("Argument '%s' exceeds maximum size %d\n", a, maxRequest)
			return nil, false
		}
		if total > maxRequest-n {
			t.printf("The total number of bytes exceed the maximum size %d\n", maxRequest)
			return nil, false
		}
		lens[i], total = n, total+n
	}
	v := &ioVector{size: total, whole: bytes.Repeat([]byte{pattern}, int(total))}
	p := v.whole
	for _, n := range lens {
		v.bufs = append(v.bufs, p[:n:n])
		p = p[n:]
	}
	return v, true
}

// vectorArgs is what readv, writev, aio_read and aio_write parse; each
// command's optstring decides which of the options it takes.
type vectorArgs struct {
	machine, quiet, verbose, pflag, fua, unmap, zeroes bool
	pattern                                            byte
	off, count                                         int64
	v                                                  *ioVector // nil with -z
}

// parseVector parses the argv of the vectored command name. With done
// set the command is over and err is its result (-i, or an error that
// has been printed).
func (t *ioTool) parseVector(name, optstring string, argv []string, read bool) (a vectorArgs, done bool, err error) {
	ct := findCommand(name)
	g := t.getopt(argv, optstring)
	kind, fill := "read", byte(0xab)
	if !read {
		kind, a.pattern = "write", 0xcd
	}
	for {
		c, arg := g.Next()
		if c == 0 {
			break
		}
		switch c {
		case 'C':
			a.machine = true
		case 'f':
			a.fua = true
		case 'P':
			a.pflag = true
			var ok bool
			if a.pattern, ok = t.parsePattern(arg); !ok {
				return a, true, errCommand
			}
		case 'i':
			t.printf("injecting invalid %s request\n", kind)
			return a, true, nil
		case 'q':
			a.quiet = true
		case 'u':
			a.unmap = true
		case 'v':
			a.verbose = true
		case 'z':
			a.zeroes = true
		default:
			return a, true, t.usage(ct)
		}
	}
	if len(g.Operands) < 2 {
		return a, true, t.usage(ct)
	}
	if a.zeroes && len(g.Operands) != 2 {
		t.printf("-z supports only a single length parameter\n")
		return a, true, errCommand
	}
	if a.unmap && !a.zeroes {
		t.printf("-u requires -z to be specified\n")
		return a, true, errCommand
	}
	var ok bool
	if a.off, ok = t.num(g.Operands[0]); !ok {
		return a, true, errCommand
	}
	if a.zeroes {
		if a.count, ok = t.num(g.Operands[1]); !ok {
			return a, true, errCommand
		}
		return a, false, nil
	}
	if !read {
		fill = a.pattern
	}
	if a.v, ok = t.newIOVector(g.Operands[1:], fill); !ok {
		return a, true, errCommand
	}
	a.count = a.v.size
	return a, false, nil
}

// readReport prints what follows a vectored read that succeeded: the -P
// verdict, then, unless -q, the -v dump and the totals. It is false when
// the pattern check failed.
func (a *vectorArgs) readReport(p printer, elapsed time.Duration) bool {
	ok := !a.pflag || bytes.Count(a.v.whole, []byte{a.pattern}) == len(a.v.whole)
	if !ok {
		p.printf("Pattern verification failed at offset %d, %d bytes\n", a.off, a.v.size)
	}
	if a.quiet {
		return ok
	}
	if a.verbose {
		hexdump(p, a.v.whole, a.off)
	}
	report(p, "read", elapsed, a.off, a.v.size, a.v.size, 1, a.machine)
	return ok
}

func (t *ioTool) readv(argv []string) error {
	a, done, err := t.parseVector("readv", "CP:qv", argv, true)
	if done {
		return err
	}
	start := time.Now()
	err = t.readVector(a.v, a.off)
	elapsed := time.Since(start)
	if err != nil {
		t.printf("readv failed: %s\n", qtool.Strerror(err))
		return errCommand
	}
	if !a.readReport(t, elapsed) {
		return errCommand
	}
	return nil
}

// readVector reads v at off, with -C's copy-on-read.
func (t *ioTool) readVector(v *ioVector, off int64) error {
	if !t.inRange(off, v.size) {
		return unix.EIO
	}
	if t.copyOnRead {
		return t.readAt(v.whole, off)
	}
	_, err := t.node.ReadV(v.bufs, off)
	return err
}

// writeVector writes v at off, durable at once with fua or in
// writethrough mode.
func (t *ioTool) writeVector(v *ioVector, off int64, fua bool) error {
	if !t.inRange(off, v.size) {
		return unix.EIO
	}
	if err := t.guardProbed(v.whole, off, v.size); err != nil {
		return err
	}
	var flags block.WriteFlags
	if fua || t.writethrough {
		flags = block.FUA
	}
	_, err := t.node.WriteV(v.bufs, off, flags)
	return err
}

func (t *ioTool) writev(argv []string) error {
	a, done, err := t.parseVector("writev", "CfqP:", argv, false)
	if done {
		return err
	}
	start := time.Now()
	err = t.writeVector(a.v, a.off, a.fua)
	elapsed := time.Since(start)
	if err != nil {
		t.printf("writev failed: %s\n", qtool.Strerror(err))
		return errCommand
	}
	if !a.quiet {
		t.report("wrote", elapsed, a.off, a.count, a.count, 1, a.machine)
	}
	return nil
}
