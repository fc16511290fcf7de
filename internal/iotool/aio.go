package iotool

import (
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
	a, done, err := t.parseVector("aio_read", "CiP:qv", argv, true)
	if done {
		return err
	}
	start := time.Now()
	t.startAIO(func(p printer) {
		err := t.readVector(a.v, a.off)
		elapsed := time.Since(start)
		if err != nil {
			p.printf("readv failed: %s\n", qtool.Strerror(err))
			return
		}
		a.readReport(p, elapsed)
	})
	return nil
}

func (t *ioTool) aioWrite(argv []string) error {
	a, done, err := t.parseVector("aio_write", "CfiqP:uz", argv, false)
	if done {
		return err
	}
	start := time.Now()
	t.startAIO(func(p printer) {
		var err error
		switch {
		case a.zeroes && !t.inRange(a.off, a.count), a.zeroes && a.count > maxRequest:
			err = unix.EIO
		case a.zeroes:
			err = t.writeZeroes(a.off, a.count, a.unmap, a.fua)
		default:
			err = t.writeVector(a.v, a.off, a.fua)
		}
		elapsed := time.Since(start)
		if err != nil {
			p.printf("aio_write failed: %s\n", qtool.Strerror(err))
			return
		}
		if !a.quiet {
			report(p, "wrote", elapsed, a.off, a.count, a.count, 1, a.machine)
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
