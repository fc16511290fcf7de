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

func (t *ioTool) readv(argv []string) error {
	ct := findCommand("readv")
	g := t.getopt(argv, "CP:qv")
	var machine, quiet, verbose, pflag bool
	var pattern byte
	for {
		c, arg := g.Next()
		if c == 0 {
			break
		}
		switch c {
		case 'C':
			machine = true
		case 'P':
			pflag = true
			var ok bool
			if pattern, ok = t.parsePattern(arg); !ok {
				return errCommand
			}
		case 'q':
			quiet = true
		case 'v':
			verbose = true
		default:
			return t.usage(ct)
		}
	}
	if len(g.Operands) < 2 {
		return t.usage(ct)
	}
	off, ok := t.num(g.Operands[0])
	if !ok {
		return errCommand
	}
	v, ok := t.newIOVector(g.Operands[1:], 0xab)
	if !ok {
		return errCommand
	}
	start := time.Now()
	err := t.readVector(v, off)
	elapsed := time.Since(start)
	if err != nil {
		t.printf("readv failed: %s\n", qtool.Strerror(err))
		return errCommand
	}
	var ret error
	if pflag && bytes.Count(v.whole, []byte{pattern}) != len(v.whole) {
		t.printf("Pattern verification failed at offset %d, %d bytes\n", off, v.size)
		ret = errCommand
	}
	if quiet {
		return ret
	}
	if verbose {
		t.hexdump(v.whole, off)
	}
	t.report("read", elapsed, off, v.size, v.size, 1, machine)
	return ret
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
	ct := findCommand("writev")
	g := t.getopt(argv, "CfqP:")
	var machine, quiet, fua bool
	pattern := byte(0xcd)
	for {
		c, arg := g.Next()
		if c == 0 {
			break
		}
		switch c {
		case 'C':
			machine = true
		case 'f':
			fua = true
		case 'q':
			quiet = true
		case 'P':
			var ok bool
			if pattern, ok = t.parsePattern(arg); !ok {
				return errCommand
			}
		default:
			return t.usage(ct)
		}
	}
	if len(g.Operands) < 2 {
		return t.usage(ct)
	}
	off, ok := t.num(g.Operands[0])
	if !ok {
		return errCommand
	}
	v, ok := t.newIOVector(g.Operands[1:], pattern)
	if !ok {
		return errCommand
	}
	start := time.Now()
	err := t.writeVector(v, off, fua)
	elapsed := time.Since(start)
	if err != nil {
		t.printf("writev failed: %s\n", qtool.Strerror(err))
		return errCommand
	}
	if !quiet {
		t.report("wrote", elapsed, off, v.size, v.size, 1, machine)
	}
	return nil
}
