package engine

// Convert copies one or more source nodes (concatenated) into a
// destination node extent by extent, as BlockStatus describes the source:
// extents that read as zero are not written at all when the destination
// already reads as zero, and written as zeroes otherwise; with a backing
// file on the destination, only what the sources' top images allocate is
// copied. Several workers read different extents in parallel; in order,
// each waits for its turn before writing, so that writes reach the
// destination in ascending offset order (qemu-img convert's default), or
// go out as soon as their data is read (-W).

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"unsafe"

	"minivmm/block"
	"minivmm/block/qcow2"
)

// ConvertOptions say how Convert copies.
type ConvertOptions struct {
	// Progress counts bytes of data extents (what qemu-img's progress
	// counts); it takes a first pass over the sources' block status.
	Options
	Workers int  // extents in flight (qemu-img's -m), at least 1
	InOrder bool // writes in ascending offset order (without -W)
	// TargetZero: dst reads as zeroes everywhere before the copy.
	TargetZero bool
	// HasBacking: dst has a backing file (-B); what the sources do not
	// allocate is left to it.
	HasBacking bool
	// BackingLen is a new dst's backing file's length, past which zeroes
	// need no writing; -1 when there is none to rely on.
	BackingLen int64
	// Writethrough flushes dst after every write.
	Writethrough bool
	// Compressed, when set, is dst's driver: whole clusters go
	// compressed (qemu-img convert -c).
	Compressed CompressedWriter
	// Sparse is the shortest run of zeroes written as zeroes rather than
	// as data, a multiple of 512 (qemu-img's -S); 0 is the default, 4 KiB.
	// Runs align to its largest power of two.
	Sparse int64
	// FullyAllocate writes everything as data, zeroes included (-S 0).
	FullyAllocate bool
	// Salvage, when set, copies past errors reading the source (qemu-img
	// convert --salvage): a range whose block status fails is narrowed
	// down to the sector and read as data, a sector that fails to read
	// is written as zeroes; each is told to Salvage (with OpStatus or
	// OpRead, the offset in the source image and the error).
	Salvage func(op Op, off int64, err error)
	// CopyRange, when set, copies data in the kernel (qemu-img convert
	// -C): from a source's host file (raw, or qcow2 data clusters of its
	// own layer) into the destination's (raw, or qcow2 clusters it owns
	// or allocates for the range: Node.CopyRangeTo); elsewhere, or once
	// the kernel refuses (EXDEV, EINVAL, ENOSYS, ...), through reads and
	// writes. Data is copied as it is, zero sectors included.
	CopyRange CopyRangeFunc
}

// CompressedWriter is a destination driver that writes compressed
// clusters (qcow2).
type CompressedWriter interface {
	WriteCompressed(p []byte, off int64) error
	ClusterSize() int64
}

// Convert copies the sources, concatenated, into dst, which must be at
// least as long and held for writing by the caller. It does not flush
// dst (unless Writethrough); the caller does, as qemu-img reports a
// failed final flush apart.
func Convert(ctx context.Context, sources []*block.Node, dst *block.Node, o ConvertOptions) error {
	src := &convertSource{starts: []int64{0}}
	for _, n := range sources {
		src.parts = append(src.parts, n)
		src.starts = append(src.starts, src.size()+n.Length())
	}
	c := &converter{src: src, dst: dst, o: o, size: src.size(), sparse: convertSparse}
	if o.Sparse > 0 {
		c.sparse = o.Sparse
	}
	c.align = 512
	for c.align*2 <= c.sparse {
		c.align *= 2
	}
	if o.Compressed != nil {
		c.clusterSize = o.Compressed.ClusterSize()
	}
	return c.run(ctx, max(1, o.Workers))
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
	src         *convertSource
	dst         *block.Node
	o           ConvertOptions
	size        int64
	clusterSize int64 // with o.Compressed
	sparse      int64 // o.Sparse or the default
	align       int64 // where zero runs may start and end

	noOffload atomic.Bool // the kernel refused copy_file_range

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
	if c.o.BackingLen >= 0 && off < c.o.BackingLen {
		// From the backing file's end on, zeroes are not written.
		n = min(n, c.o.BackingLen-off)
	}
	st, l, err := node.BlockStatus(poff, n)
	for err != nil && c.o.Salvage != nil {
		if n <= 512 {
			c.o.Salvage(OpStatus, poff, err)
			st, l, err = block.Status{Data: true, Allocated: true}, min(512, n), nil
			break
		}
		n = (n/512 + 3) / 4 * 512
		st, l, err = node.BlockStatus(poff, n)
	}
	if err != nil {
		return 0, 0, fail(OpStatus, poff, err)
	}
	if l > 0 {
		n = l
	} else {
		st = block.Status{Data: true, Allocated: true}
	}
	kind := extentData
	switch {
	case c.o.HasBacking && !st.Allocated:
		// Only src's own layer is copied; the rest shows through from
		// dst's backing file, unless src's own backing does not reach
		// there (reading zeroes).
		kind = extentBacking
		if b := node.Child("backing"); b == nil || poff >= b.Length() {
			kind = extentZero
		}
	case st.Zero || !st.Data:
		kind = extentZero
		if c.o.FullyAllocate {
			kind = extentData
		}
	}
	if kind == extentZero && c.o.BackingLen >= 0 && off >= c.o.BackingLen {
		kind = extentBacking
	}
	if kind == extentData {
		n = min(n, convertChunk)
	}
	if c.o.Compressed != nil {
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

func (c *converter) run(ctx context.Context, workers int) error {
	c.turn = sync.NewCond(&c.mu)
	if c.o.Progress != nil || c.o.Salvage != nil {
		// As qemu-img, progress is the share of the data extents done,
		// which takes a first pass over the source's block status (made
		// also with salvage, whose warnings it repeats, as qemu-img's).
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
			buf := AlignedBuffer(convertChunk)
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
	var inline []byte
	if c.o.Salvage != nil {
		inline = AlignedBuffer(convertChunk)
	}
	seq := 0
	for off := int64(0); off < c.size; {
		c.mu.Lock()
		failed := c.failed
		c.mu.Unlock()
		if failed != nil {
			break
		}
		kind, n, e := c.status(off)
		if e == nil && kind == extentData {
			e = c.o.wait(ctx, n)
		} else if e == nil {
			e = ctx.Err()
		}
		if e != nil {
			err = e
			break
		}
		if kind == extentData {
			c.mu.Lock()
			c.dataDone += n
			c.o.progress(c.dataDone, c.dataTotal)
			c.mu.Unlock()
		}
		if inline != nil {
			// Salvage: each extent copied before the next one's status
			// is asked, so that warnings come in qemu-img's order.
			if e := c.copyExtent(convertExtent{seq: seq, off: off, len: n, kind: kind}, inline); e != nil {
				err = e
				break
			}
		} else {
			ext <- convertExtent{seq: seq, off: off, len: n, kind: kind}
		}
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
	if e.kind == extentData && c.o.CopyRange == nil {
		data = buf[:e.len]
		if err := c.src.readAt(data, e.off); err != nil && c.o.Salvage != nil {
			c.salvageRead(data, e.off)
		} else if err != nil {
			rerr = fail(OpRead, e.off, err)
		}
	}
	if c.o.InOrder {
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
	case c.o.CopyRange != nil:
		err = c.offloadData(e.off, e.len, buf)
	case c.o.Compressed != nil && allZeroBytes(data) && !c.o.FullyAllocate:
		// Zeroes as zeroes, but with -S 0 a compressed cluster of
		// zeroes is written all the same (qemu-img's convert_write).
		err = c.writeZeroes(e.off, e.len)
	case c.o.Compressed != nil:
		err = c.writeCompressed(data, e.off)
	default:
		err = c.writeData(data, e.off)
	}
	if err == nil && c.o.Writethrough && e.kind != extentBacking {
		err = c.dst.Flush()
	}
	return fail(OpWrite, e.off, err)
}

func (c *converter) writeZeroes(off, n int64) error {
	if c.o.TargetZero {
		return nil
	}
	return c.dst.WriteZeroes(off, n, true)
}

// writeData writes data read at off: its runs of data as data and its
// zero stretches of 4 KiB or more as zeroes, as qemu-img does.
func (c *converter) writeData(data []byte, off int64) error {
	if c.o.FullyAllocate {
		_, err := c.dst.WriteAt(data, off)
		return err
	}
	for len(data) > 0 {
		n, isData := allocatedRun(data, off, c.sparse, c.align)
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
// off) that are all zero or all not, with its end aligned to alignBytes:
// a data run's end up, a zero run's down (qemu-img's
// is_allocated_sectors).
func sectorRun(p []byte, off, alignBytes int64) (int, bool) {
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
	align := alignBytes / 512
	if tail := int((off/512 + int64(i)) % align); tail != 0 {
		if zero && i <= tail {
			zero = false // a zero run only as long as the tail is data
		}
		if zero {
			i -= tail
		} else {
			i = min(i+int(align)-tail, nsec)
		}
	}
	return min(i*512, len(p)), !zero
}

// allocatedRun is the length of p's first run to write as data (true) or
// as zeroes: data runs take in the zero stretches shorter than
// sparse between them (qemu-img's is_allocated_sectors_min).
func allocatedRun(p []byte, off, sparse, align int64) (int, bool) {
	n, isData := sectorRun(p, off, align)
	if !isData {
		return n, false
	}
	minZero := min(int(sparse), len(p))
	used := n
	for checked := n; checked < len(p); {
		k, d := sectorRun(p[checked:], off+int64(checked), align)
		checked += k
		if d {
			used = checked
		} else if k >= minZero {
			break
		}
	}
	return used, true
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
		case c.o.TargetZero && allZeroBytes(p):
		case n == cs:
			err := c.o.Compressed.WriteCompressed(p, off)
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

func allZeroBytes(p []byte) bool {
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

// AlignedBuffer is n bytes starting at a 4096-byte boundary, as O_DIRECT
// needs.
func AlignedBuffer(n int) []byte {
	const align = 4096
	b := make([]byte, n+align)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % align); r != 0 {
		skip = align - r
	}
	return b[skip : skip+n : skip+n]
}

// salvageRead reads p at off sector by sector: what fails to read is
// told and reads as zeroes.
func (c *converter) salvageRead(p []byte, off int64) {
	for i := 0; i < len(p); i += 512 {
		sec := p[i:min(i+512, len(p))]
		if err := c.src.readAt(sec, off+int64(i)); err != nil {
			c.o.Salvage(OpRead, off+int64(i), err)
			clear(sec)
		}
	}
}
