package main

// minivmm img convert: qemu-img convert over minivmm's block layer. The
// source (raw, or qcow2 with its backing chain) is read through the block
// layer; the destination is created with img create's helpers, opened
// read-write through the block layer and filled extent by extent, as
// BlockStatus describes the source: extents that read as zero are not
// written at all when the destination already reads as zero (a freshly
// created raw or qcow2 does), and written as zeroes otherwise (-n).
//
// Ordering: -m N workers read different extents in parallel. Without -W
// each worker waits for its turn before writing, so writes reach the
// destination in ascending offset order, as qemu-img's in-order mode
// does; with -W writes go out as soon as their data is read.
//
// Caching is qemu-img's: -t (destination) defaults to unsafe, where no
// flush reaches the disk, -T (source) to writeback.

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/cmdline"
	"minivmm/qemuopen"
)

func init() {
	imgCommands["convert"] = imgCommand{run: runImgConvert,
		usage: "convert [-U] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-o options] [-m num_coroutines] [-W] [-add-fd fd=N,set=M] filename output_filename"}
}

// imgSession is images opened in one block graph over one registry, so
// that -add-fd sets are installed once for all of them.
type imgSession struct {
	reg    *qemuopen.Registry
	g      *block.Graph
	stderr io.Writer
}

func newImgSession(addFds []cmdline.Occurrence, stderr io.Writer) (*imgSession, bool) {
	s := &imgSession{reg: qemuopen.New(qemuopen.Config{}), stderr: stderr}
	if err := (&vmm{stderr: stderr, fds: s.reg}).addFds(addFds); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", imgProg, err)
		s.reg.CloseAll()
		return nil, false
	}
	s.g = block.NewGraph(s.reg)
	return s, true
}

func (s *imgSession) close() {
	s.g.Close()
	s.reg.CloseAll()
}

// open opens an image as minivmm io does (ioTool.open). An image opened
// for writing whose format is not given is probed first and opened in the
// format found, as qemu-img does; a probed raw gets QEMU's warning.
func (s *imgSession) open(o *ioOptions) (*block.Node, error) {
	if !o.readOnly && o.format == "" && !o.imageOpts {
		f, err := s.probe(o.file)
		if err != nil {
			return nil, err
		}
		o.format = f
		if f == "raw" {
			fmt.Fprintf(s.stderr, "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"+
				"         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n"+
				"         Specify the 'raw' format explicitly to remove the restrictions.\n", o.file)
		}
	}
	t := &ioTool{stderr: s.stderr, g: s.g}
	if err := t.open(o); err != nil {
		return nil, err
	}
	return t.node, nil
}

// probe names the format of file's first 512 bytes.
func (s *imgSession) probe(file string) (string, error) {
	n, err := s.g.Add(block.Options{"driver": "file", "filename": file})
	if err != nil {
		return "", err
	}
	defer s.g.Delete(n.Name())
	header := make([]byte, min(512, n.Length()))
	if _, err := n.ReadAt(header, 0); err != nil {
		return "", fmt.Errorf("Could not read image for determining its format: %s", strerror(err))
	}
	return block.Probe(header, file), nil
}

// imgCreateImage creates filename as `img create -f format -o opts` does,
// without its "Formatting" line (qemu-img convert prints none). As
// qemu-img convert's, errors about the options do not name the file;
// errors creating it do.
func imgCreateImage(reg *qemuopen.Registry, filename, format string, optStrs []string, size uint64) error {
	kinds, ok := createKinds[format]
	if !ok {
		return fmt.Errorf("Unknown file format '%s'", format)
	}
	opts, err := cmdline.ParseOpts(strings.Join(optStrs, ","), "")
	if err == nil {
		err = opts.Validate(kinds)
	}
	if err != nil {
		return err
	}
	if _, ok := opts.Get("size"); ok {
		return errors.New("Parameter 'size' is not allowed with convert; the size is the source's")
	}
	var write func(fd int) error
	if format == "raw" {
		prealloc, _ := opts.Get("preallocation")
		switch prealloc {
		case "", "off", "falloc", "full":
		default:
			return fmt.Errorf("Unsupported preallocation mode: %s", prealloc)
		}
		write = func(fd int) error { return createRaw(fd, (size+511)&^511, prealloc) }
	} else {
		backing, _ := opts.Get("backing_file")
		backingFmt, _ := opts.Get("backing_fmt")
		co, err := qcow2CreateOptions(opts, size, backing, backingFmt)
		if err == nil {
			err = qcow2.ValidateCreate(co)
		}
		if err != nil {
			return err
		}
		write = func(fd int) error { return qcow2.Create(qcow2.FdTarget(fd), co) }
	}
	fd, err := reg.Create(filename, unix.O_RDWR|unix.O_TRUNC, 0o644)
	if err != nil {
		var qe *qemuopen.Error
		if errors.As(err, &qe) && qe.Msg == "" {
			return fmt.Errorf("%s: Could not create '%s': %s", filename, filename, strerror(err))
		}
		return fmt.Errorf("%s: %s", filename, err)
	}
	err = write(fd)
	if err == nil {
		err = unix.Fsync(fd)
	}
	reg.Close(fd)
	if err != nil {
		return fmt.Errorf("%s: Could not write image: %s", filename, strerror(err))
	}
	return nil
}

// convertExtent is one piece of the source: data to copy, or zeroes.
type convertExtent struct {
	seq      int
	off, len int64
	zero     bool
}

// convertChunk is the most one extent covers (qemu-img's buffer size).
const convertChunk = 2 << 20

// convertZeroMax is the most one zero extent covers.
const convertZeroMax = 1 << 30

func runImgConvert(args []string, stdout, stderr io.Writer) int {
	var srcFmt string
	outFmt := "raw"
	var optStrs []string
	progress, quiet, noCreate, outOfOrder, forceShare, compress := false, false, false, false, false, false
	workers := 8
	// qemu-img convert's defaults: cache=unsafe for the destination
	// (no flush at all), writeback for the source.
	dstOpts := &ioOptions{noFlush: true, unmap: true}
	srcOpts := &ioOptions{readOnly: true}
	dstWritethrough := false
	a, rc, ok := imgGetopt(args, "f:O:o:cpqnm:WUt:T:", []longOption{{"force-share", false, 'U'}}, stdout, stderr, func(c rune, arg string) bool {
		switch c {
		case 'f':
			srcFmt = arg
		case 'O':
			outFmt = arg
		case 'o':
			optStrs = append(optStrs, arg)
		case 'c':
			compress = true
		case 'p':
			progress = true
		case 'q':
			quiet = true
		case 'n':
			noCreate = true
		case 'W':
			outOfOrder = true
		case 'U':
			forceShare = true
		case 'm':
			n, err := strconv.Atoi(arg)
			if err != nil || n < 1 || n > 16 {
				fmt.Fprintf(stderr, "%s: Invalid number of coroutines. Allowed number of coroutines is between 1 and 16\n", imgProg)
				return false
			}
			workers = n
		case 't', 'T':
			o := dstOpts
			if c == 'T' {
				o = srcOpts
			}
			wt, ok := imgCacheMode(arg, o)
			if !ok {
				what := "cache"
				if c == 'T' {
					what = "source cache"
				}
				fmt.Fprintf(stderr, "%s: Invalid %s option: %s\n", imgProg, what, arg)
				return false
			}
			if c == 't' {
				dstWritethrough = wt
			}
		}
		return true
	})
	if !ok {
		return rc
	}
	if quiet {
		progress = false
	}
	if len(a.operands) < 2 {
		fmt.Fprintf(stderr, "%s: Expecting image file name\n", imgProg)
		return imgTryHelp(stderr)
	}
	if len(a.operands) > 2 {
		fmt.Fprintf(stderr, "%s: minivmm img convert takes exactly one source image\n", imgProg)
		return 1
	}
	srcName, dstName := a.operands[0], a.operands[1]
	if noCreate && len(optStrs) > 0 {
		fmt.Fprintf(stderr, "%s: -o has no effect when skipping image creation\n", imgProg)
		return 1
	}

	s, ok := newImgSession(a.addFds, stderr)
	if !ok {
		return 1
	}
	defer s.close()
	srcOpts.file, srcOpts.haveFile, srcOpts.format, srcOpts.forceShare = srcName, true, srcFmt, forceShare
	src, err := s.open(srcOpts)
	if err != nil {
		fmt.Fprintf(stderr, "%s: Could not open '%s': %s\n", imgProg, srcName, message(err))
		return 1
	}
	size := src.Length()
	if compress && !noCreate && outFmt != "qcow2" {
		fmt.Fprintf(stderr, "%s: Compression not supported for this file format\n", imgProg)
		return 1
	}
	if !noCreate {
		if err := imgCreateImage(s.reg, dstName, outFmt, optStrs, uint64(size)); err != nil {
			fmt.Fprintf(stderr, "%s: %s\n", imgProg, err)
			return 1
		}
	}
	dstOpts.file, dstOpts.haveFile, dstOpts.format = dstName, true, outFmt
	dst, err := s.open(dstOpts)
	if err != nil {
		fmt.Fprintf(stderr, "%s: Could not open '%s': %s\n", imgProg, dstName, message(err))
		return 1
	}
	var cw compressedWriter
	if compress {
		var ok bool
		cw, ok = dst.Image().(compressedWriter)
		if !ok {
			fmt.Fprintf(stderr, "%s: Compression not supported for this file format\n", imgProg)
			return 1
		}
	}
	if dst.Length() < size {
		fmt.Fprintf(stderr, "%s: output file is smaller than input file\n", imgProg)
		return 1
	}
	c := &converter{src: src, dst: dst, targetZero: !noCreate, inOrder: !outOfOrder, size: size,
		writethrough: dstWritethrough, cw: cw}
	if cw != nil {
		c.clusterSize = cw.ClusterSize()
	}
	if progress {
		c.progress = stdout
	}
	if err := c.run(workers); err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", imgProg, err)
		return 1
	}
	if err := dst.Flush(); err != nil {
		fmt.Fprintf(stderr, "%s: error while flushing: %s\n", imgProg, message(err))
		return 1
	}
	return 0
}

// converter copies src to dst.
type converter struct {
	src, dst     *block.Node
	targetZero   bool // dst reads as zeroes everywhere before the copy
	inOrder      bool
	writethrough bool // flush after every write (-t writethrough, directsync)
	size         int64
	progress     io.Writer        // nil: none
	cw           compressedWriter // -c: whole clusters go compressed
	clusterSize  int64            // with cw

	mu       sync.Mutex
	turn     *sync.Cond
	nextSeq  int // without -W: the extent whose write goes next
	failed   error
	done     int64 // bytes finished
	lastShow float64
}

func (c *converter) showProgress(force bool) {
	if c.progress == nil {
		return
	}
	p := 100.0
	if c.size > 0 {
		p = float64(c.done) * 100 / float64(c.size)
	}
	if force || p >= c.lastShow+1 || (p == 100 && c.lastShow != 100) {
		c.lastShow = p
		fmt.Fprintf(c.progress, "    (%3.2f/100%%)\r", p)
	}
}

func (c *converter) run(workers int) error {
	c.turn = sync.NewCond(&c.mu)
	c.showProgress(true)
	ext := make(chan convertExtent, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := alignedBuffer(convertChunk)
			for e := range ext {
				err := c.copyExtent(e, buf)
				c.mu.Lock()
				if err != nil && c.failed == nil {
					c.failed = err
				}
				c.done += e.len
				c.showProgress(false)
				c.mu.Unlock()
			}
		}()
	}
	var err error
	seq := 0
	for off := int64(0); off < c.size; {
		c.mu.Lock()
		failed := c.failed
		c.mu.Unlock()
		if failed != nil {
			break
		}
		// Zero extents may be long (nothing is read for them); data
		// extents are cut to the buffer size.
		st, n, e := c.src.BlockStatus(off, min(convertZeroMax, c.size-off))
		if e != nil {
			err = fmt.Errorf("error while reading block status at offset %d: %s", off, message(e))
			break
		}
		if n <= 0 {
			n = min(convertChunk, c.size-off)
			st = block.Status{Data: true}
		}
		zero := st.Zero || !st.Data
		if c.cw != nil {
			// Compressed output: extents are whole clusters (off stays
			// cluster-aligned), but the image's last one.
			cs := c.clusterSize
			if zero && off+n < c.size {
				if end := (off + n) &^ (cs - 1); end > off {
					n = end - off
				} else {
					zero, n = false, min(cs, c.size-off)
				}
			}
			if !zero {
				n = min(n, convertChunk)
				n = min((off+n+cs-1)&^(cs-1), c.size) - off
			}
		} else if !zero {
			n = min(n, convertChunk)
		}
		ext <- convertExtent{seq: seq, off: off, len: n, zero: zero}
		seq++
		off += n
	}
	close(ext)
	wg.Wait()
	if err == nil {
		err = c.failed
	}
	if err != nil {
		return err
	}
	if c.progress != nil {
		c.done = c.size
		c.showProgress(false)
		fmt.Fprintf(c.progress, "    (%3.2f/100%%)\r\n", 100.0)
	}
	return nil
}

// copyExtent reads e (when it holds data) and writes it, in turn unless -W.
func (c *converter) copyExtent(e convertExtent, buf []byte) error {
	var data []byte
	var rerr error
	if !e.zero {
		data = buf[:e.len]
		if _, err := c.src.ReadAt(data, e.off); err != nil {
			rerr = fmt.Errorf("error while reading at byte %d: %s", e.off, message(err))
		} else if c.targetZero && allZeroBytes(data) {
			data, e.zero = nil, true
		}
	}
	if c.inOrder {
		c.mu.Lock()
		for c.nextSeq != e.seq && c.failed == nil {
			c.turn.Wait()
		}
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			c.nextSeq = e.seq + 1
			c.turn.Broadcast()
			c.mu.Unlock()
		}()
	}
	if rerr != nil {
		c.mu.Lock()
		if c.failed == nil {
			c.failed = rerr
		}
		c.turn.Broadcast()
		c.mu.Unlock()
		return rerr
	}
	var err error
	switch {
	case e.zero && c.targetZero:
		return nil
	case e.zero:
		err = c.dst.WriteZeroes(e.off, e.len, true)
	case c.cw != nil:
		err = c.writeCompressed(data, e.off)
	default:
		_, err = c.dst.WriteAt(data, e.off)
	}
	if err == nil && c.writethrough {
		err = c.dst.Flush()
	}
	if err != nil {
		return fmt.Errorf("error while writing at byte %d: %s", e.off, message(err))
	}
	return nil
}

// compressedWriter is a destination driver that writes compressed
// clusters (qcow2).
type compressedWriter interface {
	WriteCompressed(p []byte, off int64) error
	ClusterSize() int64
}

// writeCompressed writes data at off (cluster-aligned) cluster by
// cluster: whole clusters compressed, as qemu-img convert -c does; a
// partial last cluster, and clusters already allocated (-n), normally.
// All-zero clusters of a destination that reads as zeroes are skipped.
func (c *converter) writeCompressed(data []byte, off int64) error {
	cs := c.clusterSize
	for len(data) > 0 {
		n := min(int64(len(data)), cs-off&(cs-1))
		p := data[:n]
		switch {
		case c.targetZero && allZeroBytes(p):
		case n == cs:
			err := c.cw.WriteCompressed(p, off)
			if errors.Is(err, qcow2.ErrCompressedTarget) {
				_, err = c.dst.WriteAt(p, off)
			}
			if err != nil {
				return err
			}
		default:
			if _, err := c.dst.WriteAt(p, off); err != nil {
				return err
			}
		}
		data, off = data[n:], off+n
	}
	return nil
}
