package imgtool

// minivmm img convert: qemu-img convert over minivmm's block layer. The
// sources (raw, or qcow2 with its backing chain; several are
// concatenated) are read through the block layer; the destination is
// created with img create's helpers, opened read-write through the block
// layer and filled extent by extent, as BlockStatus describes the source:
// extents that read as zero are not written at all when the destination
// already reads as zero (a freshly created image without a backing file,
// or -n --target-is-zero), and written as zeroes otherwise. With a backing
// file (-B), only what the source's top image allocates is copied, as
// qemu-img does: it does not compare data with the backing file.
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
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/cmdline"
	"minivmm/internal/qtool"
	"minivmm/qemuopen"
)

func init() {
	imgCommands["convert"] = imgCommand{run: runImgConvert,
		usage: "convert [--target-is-zero] [-U] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-m num_coroutines] [-W] [-add-fd fd=N,set=M] filename [filename2 [...]] output_filename"}
}

// imgCreateImage creates filename as `img create -f format -o opts` does,
// without its "Formatting" line (qemu-img convert prints none). As
// qemu-img convert's, errors about the options do not name the file;
// errors creating it do.
// backing and backingFmt, when set, are -B and -F, which win over -o's.
func imgCreateImage(reg *qemuopen.Registry, filename, format string, optStrs []string, size uint64, backing, backingFmt string) error {
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
			return fmt.Errorf("%s: error while converting raw: invalid parameter value: %s", filename, prealloc)
		}
		write = func(fd int) error { return createRaw(fd, (size+511)&^511, prealloc) }
	} else {
		if v, ok := opts.Get("backing_file"); ok && backing == "" {
			backing = v
		}
		if v, ok := opts.Get("backing_fmt"); ok && backingFmt == "" {
			backingFmt = v
		}
		co, err := qcow2CreateOptions(opts, size, backing, backingFmt)
		if err == nil {
			err = qcow2.ValidateCreate(co)
		}
		if err != nil {
			return fmt.Errorf("%s: error while converting %s: %w", filename, format, err)
		}
		write = func(fd int) error { return qcow2.Create(qcow2.FdTarget(fd), co) }
	}
	fd, err := reg.Create(filename, unix.O_RDWR|unix.O_TRUNC, 0o644)
	if err != nil {
		var qe *qemuopen.Error
		if errors.As(err, &qe) && qe.Msg == "" {
			return fmt.Errorf("%s: Could not create '%s': %s", filename, filename, qtool.Strerror(err))
		}
		return fmt.Errorf("%s: %s", filename, err)
	}
	err = write(fd)
	if err == nil {
		err = unix.Fsync(fd)
	}
	reg.Close(fd)
	if err != nil {
		return fmt.Errorf("%s: Could not write image: %s", filename, qtool.Strerror(err))
	}
	return nil
}

// extentKind is how a stretch of the source reaches the destination
// (qemu-img's ImgConvertBlockStatus).
type extentKind int

const (
	extentData    extentKind = iota // read and written (its zero sectors as zeroes)
	extentZero                      // written as zeroes, unless the destination reads as zero
	extentBacking                   // left to the destination's backing file
)

// convertExtent is one piece of the source.
type convertExtent struct {
	seq      int
	off, len int64
	kind     extentKind
}

// convertChunk is the most one extent covers (qemu-img's buffer size).
const convertChunk = 2 << 20

// convertZeroMax is the most one zero extent covers.
const convertZeroMax = 1 << 30

func runImgConvert(e *env, args []string) int {
	stdout, stderr := e.stdout, e.stderr
	var srcFmt, backing, backingFmt string
	outFmt := "raw"
	var optStrs []string
	progress, quiet, noCreate, outOfOrder, forceShare, compress, targetIsZero := false, false, false, false, false, false, false
	workers := 8
	// qemu-img convert's defaults: cache=unsafe for the destination
	// (no flush at all), writeback for the source.
	dstOpts := &qtool.OpenFlags{NoFlush: true, Unmap: true}
	srcOpts := &qtool.OpenFlags{ReadOnly: true}
	dstWritethrough := false
	a, rc, ok := e.getopt(args, "f:O:B:F:o:cpqnm:WUt:T:", []qtool.LongOption{qtool.Opt("force-share", false, 'U'),
		qtool.Opt("target-is-zero", false, 'Z')}, func(c rune, arg string) bool {
		switch c {
		case 'f':
			srcFmt = arg
		case 'O':
			outFmt = arg
		case 'B':
			backing = arg
		case 'F':
			backingFmt = arg
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
		case 'Z':
			targetIsZero = true
		case 'm':
			n, err := strconv.Atoi(arg)
			if err != nil || n < 1 || n > 16 {
				fmt.Fprintf(stderr, "%s: Invalid number of coroutines. Allowed number of coroutines is between 1 and 16\n", e.prog)
				return false
			}
			workers = n
		case 't', 'T':
			o := dstOpts
			if c == 'T' {
				o = srcOpts
			}
			wt, ok := o.SetCacheMode(arg)
			if !ok {
				what := "cache"
				if c == 'T' {
					what = "source cache"
				}
				fmt.Fprintf(stderr, "%s: Invalid %s option: %s\n", e.prog, what, arg)
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
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "%s: %s\n", e.prog, fmt.Sprintf(format, a...))
		return 1
	}
	if quiet {
		progress = false
	}
	if noCreate && len(optStrs) > 0 {
		return fail("-o has no effect when skipping image creation")
	}
	if targetIsZero && !noCreate {
		return fail("--target-is-zero requires use of -n flag")
	}
	if len(a.operands) < 2 {
		return fail("Must specify image file name")
	}
	// From here on, as qemu-img, the progress line starts at 0 and
	// ends, even after an error.
	prog := newImgProgress(stdout, progress, 1)
	prog.set(0)
	defer prog.end()
	srcNames, dstName := a.operands[:len(a.operands)-1], a.operands[len(a.operands)-1]

	s, ok := e.newSession(a.addFds)
	if !ok {
		return 1
	}
	defer s.close()
	src := &convertSource{starts: []int64{0}}
	for _, name := range srcNames {
		o := *srcOpts
		o.File, o.Format, o.ForceShare = name, srcFmt, forceShare
		n, err := s.open(&o)
		if err != nil {
			return fail("Could not open '%s': %s", name, qtool.Message(err))
		}
		src.parts = append(src.parts, n)
		src.starts = append(src.starts, src.size()+n.Length())
	}
	size := src.size()
	if !noCreate {
		if _, ok := createKinds[outFmt]; ok && outFmt == "raw" {
			// qemu-img sets -B and -F as create options, which raw lacks.
			if backing != "" {
				return fail("Backing file not supported for file format '%s'", outFmt)
			}
			if backingFmt != "" {
				return fail("Backing file format not supported for file format '%s'", outFmt)
			}
		}
		// A format without backing files rejects the option when the
		// image is created, as qemu-img's option parsing does first.
		_, backed := createKinds[outFmt]["backing_file"]
		if opts, err := cmdline.ParseOpts(strings.Join(optStrs, ","), ""); err == nil && backed {
			if v, ok := opts.Get("backing_file"); ok && backing == "" {
				backing = v
			}
			if v, ok := opts.Get("backing_fmt"); ok && backingFmt == "" {
				backingFmt = v
			}
		}
	}
	if targetIsZero && backing != "" {
		// qemu-img 7.2 prints this and exits 0 without converting.
		return fail("Cannot use --target-is-zero when the destination image has a backing file")
	}
	if len(srcNames) > 1 && backing != "" {
		return fail("Having a backing file for the target makes no sense when concatenating multiple input images")
	}
	if !noCreate && backing != "" && backingFmt == "" {
		return fail("Use of backing file requires explicit backing format")
	}
	if compress && !noCreate && outFmt != "qcow2" {
		return fail("Compression not supported for this file format")
	}
	if !noCreate {
		if err := imgCreateImage(s.reg, dstName, outFmt, optStrs, uint64(size), backing, backingFmt); err != nil {
			return fail("%s", err)
		}
	}
	dstOpts.File, dstOpts.Format = dstName, outFmt
	dst, err := s.open(dstOpts)
	if err != nil {
		if !noCreate {
			// Bad input (a backing file that does not open) leaves
			// nothing behind, where qemu-img leaves the new image.
			os.Remove(dstName)
		}
		return fail("Could not open '%s': %s", dstName, qtool.Message(err))
	}
	var cw compressedWriter
	if compress {
		var ok bool
		cw, ok = dst.Image().(compressedWriter)
		if !ok {
			return fail("Compression not supported for this file format")
		}
	}
	if dst.Length() < size {
		return fail("output file is smaller than input file")
	}
	c := &converter{src: src, dst: dst, targetZero: (!noCreate && backing == "") || targetIsZero,
		hasBacking: backing != "", backingLen: -1, inOrder: !outOfOrder, size: size,
		writethrough: dstWritethrough, cw: cw, progress: prog}
	if b := dst.Child("backing"); b != nil && !noCreate {
		c.backingLen = b.Length()
	}
	if cw != nil {
		c.clusterSize = cw.ClusterSize()
	}
	err = c.run(workers)
	if err == nil {
		if err = dst.Flush(); err != nil {
			err = fmt.Errorf("error while flushing: %s", qtool.Message(err))
		}
	}
	if err != nil {
		return fail("%s", err)
	}
	prog.set(100)
	return 0
}

// convertSource is the source images read as one, qemu-img convert
// concatenating them.
type convertSource struct {
	parts  []*block.Node
	starts []int64 // where each part starts, and (last) the total size
}

func (s *convertSource) size() int64 { return s.starts[len(s.starts)-1] }

// part is the index of the part holding off (empty parts hold nothing).
func (s *convertSource) part(off int64) int {
	return sort.Search(len(s.parts), func(i int) bool { return s.starts[i+1] > off })
}

// readAt reads across parts: a compressed destination's whole clusters
// may span two.
func (s *convertSource) readAt(p []byte, off int64) error {
	for len(p) > 0 {
		i := s.part(off)
		n := min(int64(len(p)), s.starts[i+1]-off)
		if _, err := s.parts[i].ReadAt(p[:n], off-s.starts[i]); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// converter copies src to dst.
type converter struct {
	src          *convertSource
	dst          *block.Node
	targetZero   bool  // dst reads as zeroes everywhere before the copy
	hasBacking   bool  // dst has a backing file (-B): what src does not allocate is left to it
	backingLen   int64 // a new dst's backing file's length, past which zeroes need no writing; or -1
	inOrder      bool
	writethrough bool // flush after every write (-t writethrough, directsync)
	size         int64
	progress     *imgProgress
	cw           compressedWriter // -c: whole clusters go compressed
	clusterSize  int64            // with cw

	mu        sync.Mutex
	turn      *sync.Cond
	nextSeq   int // without -W: the extent whose write goes next
	failed    error
	dataTotal int64 // bytes of data extents, which progress counts (as qemu-img)
	dataDone  int64
}

// status is the kind of the source extent at off and its length, as
// qemu-img's convert_iteration_sectors sees it.
func (c *converter) status(off int64) (extentKind, int64, error) {
	i := c.src.part(off)
	node, poff := c.src.parts[i], off-c.src.starts[i]
	n := min(convertZeroMax, c.src.starts[i+1]-off)
	if c.backingLen >= 0 && off < c.backingLen {
		// From the backing file's end on, zeroes are not written.
		n = min(n, c.backingLen-off)
	}
	st, l, err := node.BlockStatus(poff, n)
	if err != nil {
		return 0, 0, fmt.Errorf("error while reading block status at offset %d: %s", poff, qtool.Message(err))
	}
	if l > 0 {
		n = l
	} else {
		st = block.Status{Data: true, Allocated: true}
	}
	kind := extentData
	switch {
	case c.hasBacking && !st.Allocated:
		// Only src's own layer is copied; the rest shows through from
		// dst's backing file, unless src's own backing does not reach
		// there (reading zeroes).
		kind = extentBacking
		if b := node.Child("backing"); b == nil || poff >= b.Length() {
			kind = extentZero
		}
	case st.Zero || !st.Data:
		kind = extentZero
	}
	if kind == extentZero && c.backingLen >= 0 && off >= c.backingLen {
		kind = extentBacking
	}
	if kind == extentData {
		n = min(n, convertChunk)
	}
	if c.cw != nil {
		// Compressed output: extents are whole clusters (off stays
		// cluster-aligned), but the image's last one.
		cs := c.clusterSize
		if n < cs {
			kind, n = extentData, min(cs, c.size-off)
		} else {
			n &^= cs - 1
		}
	}
	return kind, n, nil
}

func (c *converter) run(workers int) error {
	c.turn = sync.NewCond(&c.mu)
	if c.progress.w != nil {
		// As qemu-img, progress is the share of the data extents done,
		// which takes a first pass over the source's block status.
		for off := int64(0); off < c.size; {
			kind, n, err := c.status(off)
			if err != nil {
				return err
			}
			if kind == extentData {
				c.dataTotal += n
			}
			off += n
		}
	}
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
		kind, n, e := c.status(off)
		if e != nil {
			err = e
			break
		}
		if kind == extentData {
			c.mu.Lock()
			c.dataDone += n
			c.progress.set(float32(100 * float64(c.dataDone) / float64(c.dataTotal)))
			c.mu.Unlock()
		}
		ext <- convertExtent{seq: seq, off: off, len: n, kind: kind}
		seq++
		off += n
	}
	close(ext)
	wg.Wait()
	if err == nil {
		err = c.failed
	}
	return err
}

// copyExtent reads e (when it holds data) and writes it, in turn unless -W.
func (c *converter) copyExtent(e convertExtent, buf []byte) error {
	var data []byte
	var rerr error
	if e.kind == extentData {
		data = buf[:e.len]
		if err := c.src.readAt(data, e.off); err != nil {
			rerr = fmt.Errorf("error while reading at byte %d: %s", e.off, qtool.Message(err))
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
	case e.kind == extentBacking:
	case e.kind == extentZero:
		err = c.writeZeroes(e.off, e.len)
	case c.cw != nil && allZeroBytes(data):
		err = c.writeZeroes(e.off, e.len)
	case c.cw != nil:
		err = c.writeCompressed(data, e.off)
	default:
		err = c.writeData(data, e.off)
	}
	if err == nil && c.writethrough && e.kind != extentBacking {
		err = c.dst.Flush()
	}
	if err != nil {
		return fmt.Errorf("error while writing at byte %d: %s", e.off, qtool.Message(err))
	}
	return nil
}

func (c *converter) writeZeroes(off, n int64) error {
	if c.targetZero {
		return nil
	}
	return c.dst.WriteZeroes(off, n, true)
}

// writeData writes data read at off: its runs of data as data and its
// zero stretches of 4 KiB or more as zeroes, as qemu-img does.
func (c *converter) writeData(data []byte, off int64) error {
	for len(data) > 0 {
		n, isData := allocatedRun(data, off)
		var err error
		if isData {
			_, err = c.dst.WriteAt(data[:n], off)
		} else {
			err = c.writeZeroes(off, int64(n))
		}
		if err != nil {
			return err
		}
		data, off = data[n:], off+int64(n)
	}
	return nil
}

// convertSparse is qemu-img convert's default -S: zero stretches shorter
// than this stay in the data written, and runs align to it.
const convertSparse = 4096

// sectorRun is the length of p's first run of sectors (at image offset
// off) that are all zero or all not, with its end aligned to
// convertSparse: a data run's end up, a zero run's down (qemu-img's
// is_allocated_sectors).
func sectorRun(p []byte, off int64) (int, bool) {
	sector := func(i int) []byte { return p[i*512 : min(i*512+512, len(p))] }
	nsec := (len(p) + 511) / 512
	zero := allZeroBytes(sector(0))
	i := 1
	for i < nsec && allZeroBytes(sector(i)) == zero {
		i++
	}
	if i == nsec {
		return len(p), !zero
	}
	const align = convertSparse / 512
	if tail := int((off/512 + int64(i)) % align); tail != 0 {
		if zero && i <= tail {
			zero = false // a zero run only as long as the tail is data
		}
		if zero {
			i -= tail
		} else {
			i = min(i+align-tail, nsec)
		}
	}
	return min(i*512, len(p)), !zero
}

// allocatedRun is the length of p's first run to write as data (true) or
// as zeroes: data runs take in the zero stretches shorter than
// convertSparse between them (qemu-img's is_allocated_sectors_min).
func allocatedRun(p []byte, off int64) (int, bool) {
	n, isData := sectorRun(p, off)
	if !isData {
		return n, false
	}
	minZero := min(convertSparse, len(p))
	used := n
	for checked := n; checked < len(p); {
		k, d := sectorRun(p[checked:], off+int64(checked))
		checked += k
		if d {
			used = checked
		} else if k >= minZero {
			break
		}
	}
	return used, true
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
