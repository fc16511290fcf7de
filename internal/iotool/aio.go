package iotool

import (
	"bytes"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/internal/qtool"
)

// aio_read and aio_write start a request and return; it runs
// concurrently with the commands that follow and prints its report when
// it completes, so reports come in completion order, as qemu-io's. A
// failed request does not fail the command (qemu-io's aio commands
// succeed once submitted). aio_flush, close and exit wait for all.

// startAIO runs req in the background; its report, built in a buffer,
// is printed whole when it completes.
func (t *ioTool) startAIO(req func(p printer)) {
	t.aio.Add(1)
	go func() {
		defer t.aio.Done()
		var b bufPrinter
		req(&b)
		if b.Len() > 0 {
			t.printf("%s", b.String())
		}
	}()
}

// waitAIO completes every outstanding request (qemu-io's blk_drain_all).
func (t *ioTool) waitAIO() { t.aio.Wait() }

func (t *ioTool) aioRead(argv []string) error {
	ct := findCommand("aio_read")
	g := t.getopt(argv, "CiP:qv")
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
		case 'i':
			t.printf("injecting invalid read request\n")
			return nil
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
	t.startAIO(func(p printer) {
		err := t.readVector(v, off)
		elapsed := time.Since(start)
		if err != nil {
			p.printf("readv failed: %s\n", qtool.Strerror(err))
			return
		}
		if pflag && bytes.Count(v.whole, []byte{pattern}) != len(v.whole) {
			p.printf("Pattern verification failed at offset %d, %d bytes\n", off, v.size)
		}
		if quiet {
			return
		}
		if verbose {
			hexdump(p, v.whole, off)
		}
		report(p, "read", elapsed, off, v.size, v.size, 1, machine)
	})
	return nil
}

func (t *ioTool) aioWrite(argv []string) error {
	ct := findCommand("aio_write")
	g := t.getopt(argv, "CfiqP:uz")
	var machine, quiet, fua, unmap, zeroes bool
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
		case 'u':
			unmap = true
		case 'P':
			var ok bool
			if pattern, ok = t.parsePattern(arg); !ok {
				return errCommand
			}
		case 'i':
			t.printf("injecting invalid write request\n")
			return nil
		case 'z':
			zeroes = true
		default:
			return t.usage(ct)
		}
	}
	if len(g.Operands) < 2 {
		return t.usage(ct)
	}
	if zeroes && len(g.Operands) != 2 {
		t.printf("-z supports only a single length parameter\n")
		return errCommand
	}
	if unmap && !zeroes {
		t.printf("-u requires -z to be specified\n")
		return errCommand
	}
	off, ok := t.num(g.Operands[0])
	if !ok {
		return errCommand
	}
	var v *ioVector
	var count int64
	if zeroes {
		if count, ok = t.num(g.Operands[1]); !ok {
			return errCommand
		}
	} else {
		if v, ok = t.newIOVector(g.Operands[1:], pattern); !ok {
			return errCommand
		}
		count = v.size
	}
	start := time.Now()
	t.startAIO(func(p printer) {
		var err error
		switch {
		case zeroes && !t.inRange(off, count), zeroes && count > maxRequest:
			err = unix.EIO
		case zeroes:
			err = t.writeZeroes(off, count, unmap, fua)
		default:
			err = t.writeVector(v, off, fua)
		}
		elapsed := time.Since(start)
		if err != nil {
			p.printf("aio_write failed: %s\n", qtool.Strerror(err))
			return
		}
		if !quiet {
			report(p, "wrote", elapsed, off, count, count, 1, machine)
		}
	})
	return nil
}

// writeZeroes is write -z: zeroes, durable at once with fua or in
// writethrough mode.
func (t *ioTool) writeZeroes(off, count int64, unmap, fua bool) error {
	if err := t.guardProbed(nil, off, count); err != nil {
		return err
	}
	if err := t.node.WriteZeroes(off, count, unmap); err != nil {
		return err
	}
	if fua || t.writethrough {
		return t.node.Flush()
	}
	return nil
}

func (t *ioTool) aioFlush([]string) error {
	t.waitAIO()
	return nil
}
