package iotool

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"minivmm/cmdline"
	"minivmm/internal/qtool"
)

// cvtnum reads an offset or a length as qemu-io does: a byte count with
// an optional fraction and a K/M/G/T/P/E suffix (qemu_strtosz), at most
// 2^63-1. The error is what qemu-io prints for it.
func cvtnum(s string) (int64, error) {
	v, err := cmdline.ParseSize(s)
	switch {
	case errors.Is(err, cmdline.ErrOutOfRange) || err == nil && v > math.MaxInt64:
		return 0, fmt.Errorf("Parsing error: argument too large -- %s", s)
	case err != nil:
		return 0, fmt.Errorf("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- %s", s)
	}
	return int64(v), nil
}

// cfloat formats v like C's printf with "%.<prec>f", which spells the
// special values differently from Go.
func cfloat(v float64, prec int) string {
	switch {
	case math.IsInf(v, 1):
		return "inf"
	case math.IsInf(v, -1):
		return "-inf"
	case math.IsNaN(v):
		return "-nan" // x86's 0.0/0.0
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// cvtstr is qemu-io's human-readable size: three decimals in the
// largest binary unit that fits (six for plain bytes), ".000..." dropped.
func cvtstr(v float64) string {
	units := []struct {
		shift  uint
		suffix string
	}{{60, " EiB"}, {50, " PiB"}, {40, " TiB"}, {30, " GiB"}, {20, " MiB"}, {10, " KiB"}}
	s, suffix := "", " bytes"
	for _, u := range units {
		if v >= float64(uint64(1)<<u.shift) {
			s, suffix = cfloat(v/float64(uint64(1)<<u.shift), 3), u.suffix
			break
		}
	}
	if s == "" {
		s = cfloat(v, 6)
	}
	if i := strings.Index(s, ".000"); i >= 0 {
		s = s[:i]
	}
	return s + suffix
}

// timestr is qemu-io's elapsed time: "00.12 sec" under a second,
// "H:MM:SS.ss" from one second on or when verbose (-C).
func timestr(d time.Duration, verbose bool) string {
	sec := int64(d / time.Second)
	frac := float64(d%time.Second) / 1e9
	if verbose || sec != 0 {
		return fmt.Sprintf("%d:%02d:%05.2f", sec/3600, sec%3600/60, float64(sec%60)+frac)
	}
	return fmt.Sprintf("%05.2f sec", frac)
}

// report prints the statistics of a read, write or discard as qemu-io's
// print_report does; machine (-C) gives the comma-separated form.
func (t *ioTool) report(op string, d time.Duration, off, count, total int64, ops int, machine bool) {
	report(t.out, op, d, off, count, total, ops, machine)
}

// printer is where output goes: standard output, or a buffer that an
// asynchronous request's completion fills before printing it at once.
type printer interface {
	printf(format string, a ...any)
}

type bufPrinter struct{ strings.Builder }

func (b *bufPrinter) printf(format string, a ...any) { fmt.Fprintf(&b.Builder, format, a...) }

func report(t printer, op string, d time.Duration, off, count, total int64, ops int, machine bool) {
	secs := d.Seconds()
	if machine {
		t.printf("%d,%d,%s,%s,%s\n", total, ops, timestr(d, true),
			cfloat(float64(total)/secs, 3), cfloat(float64(ops)/secs, 3))
		return
	}
	t.printf("%s %d/%d bytes at offset %d\n", op, total, count, off)
	t.printf("%s, %d ops; %s (%s/sec and %s ops/sec)\n", cvtstr(float64(total)), ops,
		timestr(d, false), cvtstr(float64(total)/secs), cfloat(float64(ops)/secs, 4))
}

// hexdump is read -v's output: 16 bytes a line, then those bytes with
// everything but ASCII letters and digits shown as '.'.
func (t *ioTool) hexdump(p []byte, off int64) { hexdump(t.out, p, off) }

func hexdump(t printer, p []byte, off int64) {
	var b strings.Builder
	for i := 0; i < len(p); i += 16 {
		line := p[i:min(i+16, len(p))]
		fmt.Fprintf(&b, "%08x:  ", off+int64(i))
		for _, c := range line {
			fmt.Fprintf(&b, "%02x ", c)
		}
		b.WriteByte(' ')
		for _, c := range line {
			if c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
				b.WriteByte(c)
			} else {
				b.WriteByte('.')
			}
		}
		b.WriteByte('\n')
	}
	t.printf("%s", b.String())
}

// stdoutWriter is qemu-io's standard output, buffered as the C library
// does (qtool.Stdout): by line on a terminal, in blocks otherwise, so that
// with both streams on one pipe error messages come out where qemu-io's
// do.
type stdoutWriter struct{ s *qtool.Stdout }

func newStdoutWriter(w io.Writer) *stdoutWriter { return &stdoutWriter{qtool.NewStdout(w)} }

// printf writes its text in one piece: asynchronous requests print as
// they complete, from other goroutines.
func (s *stdoutWriter) printf(format string, a ...any) {
	s.s.Write([]byte(fmt.Sprintf(format, a...)))
}

func (s *stdoutWriter) flush() { s.s.Flush() }
