package qcow2

// Check: QEMU's qcow2_check_refcounts (block/qcow2-refcount.c), read
// only. It counts the references of every cluster of the image (header,
// L1 and L2 tables, data and compressed clusters, snapshots, refcount
// structures, bitmaps), compares them with the refcounts on disk and
// checks the OFLAG_COPIED flags, printing QEMU's messages to a log.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"minivmm/block"
)

// CheckResult is what a check found: QEMU's BdrvCheckResult.
type CheckResult struct {
	CheckErrors        int64
	Corruptions        int64
	Leaks              int64
	ImageEndOffset     int64
	TotalClusters      int64
	AllocatedClusters  int64
	FragmentedClusters int64
	CompressedClusters int64
}

// CheckOpenError is an image Check could not open (its header or tables
// are refused as QEMU refuses them at open).
type CheckOpenError struct{ Err error }

func (e *CheckOpenError) Error() string { return e.Err.Error() }
func (e *CheckOpenError) Unwrap() error { return e.Err }

// errCheckNoMem is QEMU's -ENOMEM: the in-memory refcount array would
// be unreasonably large (references far past the end of the file).
var errCheckNoMem = errors.New("Cannot allocate memory")

// maxCheckGrowth bounds how far past the file's end references may grow
// the in-memory refcount array.
const maxCheckGrowth = 1 << 24

const (
	reftOffsetMask   = 0xfffffffffffffe00
	reftReserved     = 0x1ff
	bmeOffsetMask    = 0x00fffffffffffe00
	bmeReserved      = 0xff000000000001fe
	bmeAllOnes       = 1
	bitmapDirEntLen  = 24
	checkFragInfo    = 1
	refcountReadFail = math.MaxUint64
)

type checker struct {
	ext    *extensions
	snaps  []snapshot
	file   *block.Node
	hdr    *header
	g      geometry
	log    io.Writer
	res    *CheckResult
	refMax uint64
	refs   []uint64 // references counted, per cluster
	limit  int64    // the largest size refs may grow to

	reftable      []uint64
	refblockBits  uint32 // log2 of refcount entries per refblock
	refblockCache map[int64][]byte
	l2buf         []byte // readL2's

	fix              int   // FixLeaks, FixErrors: what check_refblocks may repair
	rebuildNeeded    bool  // only a new refcount structure can fix what was found
	corruptionsFixed int64 // by check_refblocks
	toldCorrupt      bool  // signalCorruption said it once

	snapTable *checkedSnapshots // the snapshot table as the check read it
	snapRes   CheckResult       // what reading it found (QEMU's snapshot_res)
	snapFixed int64             // snapshot table corruptions fixed
}

// Check checks the qcow2 image in file (a protocol node), without
// writing. An error means the check could not finish (qemu-img's exit
// 1); a *CheckOpenError that the image could not be opened.
func Check(file *block.Node, log io.Writer) (*CheckResult, error) {
	// A hostile image can make millions of messages: one write each
	// would cost more than the check.
	bw := bufio.NewWriterSize(log, 64<<10)
	defer bw.Flush()
	c, err := newChecker(file, bw, 0, nil)
	if err != nil {
		if c == nil {
			return nil, err
		}
		c.addSnapResult(c.res)
		return c.res, err
	}
	cs := c.hdr.clusterSize()
	highest, _ := c.compare()
	if err := c.checkCopied(); err != nil {
		return c.res, err
	}
	c.res.ImageEndOffset = (highest + 1) * cs
	c.addSnapResult(c.res)
	return c.res, nil
}

// addSnapResult adds what the snapshot table's check found to res
// (qcow2_add_check_result without the allocation figures).
func (c *checker) addSnapResult(res *CheckResult) {
	res.Corruptions += c.snapRes.Corruptions
	res.Leaks += c.snapRes.Leaks
	res.CheckErrors += c.snapRes.CheckErrors
}

// newChecker reads file's metadata and counts the references to every
// cluster, for Check and Repair alike. A nil checker with the error means
// the image could not be opened (*CheckOpenError); a checker with it, that
// the count could not finish.
func newChecker(file *block.Node, log io.Writer, fix int, snapTable *checkedSnapshots) (*checker, error) {
	h, x, err := checkOpen(file)
	if err != nil {
		return nil, &CheckOpenError{err}
	}
	cs := h.clusterSize()
	c := &checker{
		file: file, hdr: h, ext: x, log: log, res: &CheckResult{},
		g:             newGeometry(h, int(cs)),
		refblockBits:  h.ClusterBits + 3 - h.RefcountOrder,
		refblockCache: map[int64][]byte{},
		fix:           fix,
	}
	c.refMax = math.MaxUint64
	if h.RefcountOrder < 6 {
		c.refMax = 1<<(1<<h.RefcountOrder) - 1
	}
	if snapTable == nil {
		if snapTable, err = c.checkSnapshotTable(); err != nil {
			return c, err
		}
	}
	c.snapTable, c.snaps = snapTable, snapTable.snaps
	nb := (file.Length() + cs - 1) / cs
	if nb > math.MaxInt32 {
		c.res.CheckErrors++
		return c, errors.New("File too large")
	}
	c.res.TotalClusters = (int64(h.Size&^511) + cs - 1) / cs
	c.refs = make([]uint64, nb)
	c.limit = nb + maxCheckGrowth
	rt := make([]byte, int64(h.RefcountTableClusters)*cs)
	if err := readFile(file, rt, int64(h.RefcountTableOffset)); err != nil {
		return nil, &CheckOpenError{fmt.Errorf("Could not read refcount table: %w", err)}
	}
	c.reftable = make([]uint64, len(rt)/8)
	for i := range c.reftable {
		c.reftable[i] = binary.BigEndian.Uint64(rt[8*i:])
	}
	return c, c.calculate(h, x, c.snaps)
}

// checkOpen reads the header and what it points to as the driver's open
// does in check mode (QEMU's BDRV_O_CHECK), with QEMU's checks and
// messages: the snapshot table is left to checkSnapshotTable, and an
// image without a refcount table is checked (and rebuilt) all the same.
func checkOpen(file *block.Node) (*header, *extensions, error) {
	c0, err := readCluster0(file)
	if err != nil {
		return nil, nil, err
	}
	h := c0.h
	hc := *h
	hc.NbSnapshots, hc.SnapshotsOffset = 0, 0
	if hc.RefcountTableClusters == 0 {
		hc.RefcountTableClusters = 1 // only the offset is checked then
	}
	if err := hc.checkTables(); err != nil {
		return nil, nil, err
	}
	c0.h = &hc
	x, _, _, err := c0.finish(file)
	c0.h = h
	if err != nil {
		return nil, nil, err
	}
	if h.IncompatibleFeatures&incompatDataFile == 0 && h.AutoclearFeatures&autoclearDataFileRaw != 0 {
		return nil, nil, errRawNeedsData
	}
	return h, x, nil
}

func (c *checker) printf(format string, a ...any) { fmt.Fprintf(c.log, format, a...) }

// inc is qcow2_inc_refcounts_imrt: one more reference to every cluster
// of [off, off+size).
func (c *checker) inc(off, size int64) error {
	if size <= 0 {
		return nil
	}
	cs := c.hdr.clusterSize()
	if off+size-c.file.Length() >= cs {
		c.printf("ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x%x size 0x%x\n", off, size)
		c.res.Corruptions++
		return nil
	}
	start, last := off&^(cs-1), (off+size-1)&^(cs-1)
	for co := start; co <= last && co >= 0; co += cs {
		k := co >> c.hdr.ClusterBits
		if k >= int64(len(c.refs)) {
			if k >= c.limit {
				c.res.CheckErrors++
				return errCheckNoMem
			}
			c.refs = append(c.refs, make([]uint64, k+1-int64(len(c.refs)))...)
		}
		if c.refs[k] == c.refMax {
			c.printf("ERROR: overflow cluster offset=0x%x\n", co)
			c.printf("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing\n")
			c.res.Corruptions++
			continue
		}
		c.refs[k]++
	}
	return nil
}

// calculate is QEMU's calculate_refcounts.
func (c *checker) calculate(h *header, x *extensions, snaps []snapshot) error {
	cs := h.clusterSize()
	if err := c.inc(0, cs); err != nil {
		return err
	}
	if err := c.checkL1(int64(h.L1TableOffset), int64(h.L1Size), checkFragInfo); err != nil {
		return err
	}
	var snapSize int64
	for _, sn := range snaps {
		snapSize = (snapSize+7)&^7 + snapshotHeaderSize + int64(sn.ExtraSize) + int64(len(sn.ID)) + int64(len(sn.Name))
	}
	if c.snapTable != nil {
		snapSize = c.snapTable.size // extra data cut by a repair still counts
	}
	for _, sn := range snaps {
		if int64(sn.L1TableOffset)&(cs-1) != 0 {
			c.printf("ERROR snapshot %s (%s) l1_offset=%#x: L1 table is not cluster aligned; snapshot table entry corrupted\n", sn.ID, sn.Name, sn.L1TableOffset)
			c.res.Corruptions++
			continue
		}
		if sn.L1Size > maxL1Bytes/8 {
			c.printf("ERROR snapshot %s (%s) l1_size=%#x: L1 table is too large; snapshot table entry corrupted\n", sn.ID, sn.Name, sn.L1Size)
			c.res.Corruptions++
			continue
		}
		if err := c.checkL1(int64(sn.L1TableOffset), int64(sn.L1Size), 0); err != nil {
			return err
		}
	}
	if err := c.inc(int64(h.SnapshotsOffset), snapSize); err != nil {
		return err
	}
	if err := c.inc(int64(h.RefcountTableOffset), int64(len(c.reftable))*8); err != nil {
		return err
	}
	if x.HasBitmaps && h.AutoclearFeatures&autoclearBitmaps != 0 {
		if err := c.checkBitmaps(x); err != nil {
			return err
		}
	}
	return c.checkRefblocks()
}

// checkL1 is check_refcounts_l1.
func (c *checker) checkL1(off, size int64, flags int) error {
	if size == 0 {
		return nil
	}
	if err := c.inc(off, size*8); err != nil {
		return err
	}
	l1, err := readL1(c.file, off, size)
	if err != nil {
		c.printf("ERROR: I/O error in check_refcounts_l1\n")
		c.res.CheckErrors++
		return err
	}
	cs := c.hdr.clusterSize()
	for _, e := range l1 {
		if e == 0 {
			continue
		}
		if e&l1Reserved != 0 {
			c.printf("ERROR found L1 entry with reserved bits set: %x\n", e)
			c.res.Corruptions++
		}
		l2 := int64(e & offsetMask)
		if err := c.inc(l2, cs); err != nil {
			return err
		}
		if l2&(cs-1) != 0 {
			c.printf("ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted\n", l2)
			c.res.Corruptions++
		}
		if err := c.checkL2(l2, flags); err != nil {
			return err
		}
	}
	return nil
}

type clusterType int

const (
	ctUnallocated clusterType = iota
	ctZeroPlain
	ctZeroAlloc
	ctNormal
	ctCompressed
)

// clusterType is qcow2_get_cluster_type.
func (c *checker) clusterType(e uint64) clusterType {
	switch {
	case e&flagCompressed != 0:
		return ctCompressed
	case e&flagZero != 0 && !c.g.extL2:
		if e&offsetMask != 0 {
			return ctZeroAlloc
		}
		return ctZeroPlain
	case !c.g.mapsHost(e):
		return ctUnallocated
	}
	return ctNormal
}

// readL2 reads a whole L2 table into a buffer it reuses: each table is
// done with before the next is read (a hostile L1 table may point to a
// million).
func (c *checker) readL2(off int64) ([]byte, error) {
	if c.l2buf == nil {
		c.l2buf = make([]byte, c.hdr.clusterSize())
	}
	return c.l2buf, readFile(c.file, c.l2buf, off)
}

// checkL2 is check_refcounts_l2.
func (c *checker) checkL2(off int64, flags int) error {
	table, err := c.readL2(off)
	if err != nil {
		c.printf("ERROR: I/O error in check_refcounts_l2\n")
		c.res.CheckErrors++
		return err
	}
	cs := c.hdr.clusterSize()
	n := cs / int64(8*c.g.entryWords)
	var nextContiguous int64
	for i := int64(0); i < n; i++ {
		e := binary.BigEndian.Uint64(table[i*int64(c.g.entryWords)*8:])
		var bitmap uint64
		if c.g.extL2 {
			bitmap = binary.BigEndian.Uint64(table[i*16+8:])
		}
		typ := c.clusterType(e)
		if typ != ctCompressed && e&l2StdReserved != 0 {
			c.printf("ERROR found l2 entry with reserved bits set: %x\n", e)
			c.res.Corruptions++
		}
		switch typ {
		case ctCompressed:
			if c.g.external {
				c.printf("ERROR compressed cluster %d with data file, entry=0x%x\n", i, e)
				c.res.Corruptions++
				break
			}
			if e&flagCopied != 0 {
				c.printf("ERROR: coffset=0x%x: copied flag must never be set for compressed clusters\n", e&(1<<c.g.csizeShift-1))
				e &^= flagCopied
				c.res.Corruptions++
			}
			if bitmap != 0 {
				c.printf("ERROR compressed cluster %d with non-zero subcluster allocation bitmap, entry=0x%x\n", i, e)
				c.res.Corruptions++
				break
			}
			coff, csize := c.g.compressedRange(e)
			if err := c.inc(coff, csize); err != nil {
				return err
			}
			if flags&checkFragInfo != 0 {
				c.res.AllocatedClusters++
				c.res.CompressedClusters++
				c.res.FragmentedClusters++
			}
		case ctZeroAlloc, ctNormal:
			o := int64(e & offsetMask)
			if (bitmap>>32)&bitmap != 0 {
				c.res.Corruptions++
				c.printf("ERROR offset=%x: Allocated cluster has corrupted subcluster allocation bitmap\n", o)
			}
			if o&(cs-1) != 0 {
				c.res.Corruptions++
				data := e&flagZero == 0
				if c.g.extL2 {
					data = bitmap&allocBitmapMask != 0
				}
				if data {
					c.printf("ERROR offset=%x: Data cluster is not properly aligned; L2 entry corrupted.\n", o)
				} else {
					c.printf("ERROR offset=%x: Preallocated cluster is not properly aligned; L2 entry corrupted.\n", o)
				}
			}
			if flags&checkFragInfo != 0 {
				c.res.AllocatedClusters++
				if nextContiguous != 0 && o != nextContiguous {
					c.res.FragmentedClusters++
				}
				nextContiguous = o + cs
			}
			// Data clusters in a data file have no refcounts.
			if c.g.external {
				break
			}
			if err := c.inc(o, cs); err != nil {
				return err
			}
		case ctUnallocated:
			if bitmap&allocBitmapMask != 0 {
				c.res.Corruptions++
				c.printf("ERROR: Unallocated cluster has non-zero subcluster allocation bitmap\n")
			}
		}
	}
	return nil
}

// checkBitmaps is qcow2_check_bitmaps_refcounts: the bitmap directory,
// each bitmap's table and the clusters the tables point to.
func (c *checker) checkBitmaps(x *extensions) error {
	var data []byte
	for _, e := range x.All {
		if e.Type == extBitmaps {
			data = e.Data
		}
	}
	be := binary.BigEndian
	nb, dirSize, dirOff := be.Uint32(data[0:]), int64(be.Uint64(data[8:])), int64(be.Uint64(data[16:]))
	if err := c.inc(dirOff, dirSize); err != nil {
		return err
	}
	dir := make([]byte, dirSize)
	if err := readFile(c.file, dir, dirOff); err != nil {
		c.res.Corruptions++
		return err
	}
	cs := c.hdr.clusterSize()
	var off int64
	for i := uint32(0); i < nb; i++ {
		if off+bitmapDirEntLen > dirSize {
			c.res.Corruptions++
			return errors.New("Invalid argument")
		}
		ent := dir[off:]
		tOff, tSize := int64(be.Uint64(ent[0:])), int64(be.Uint32(ent[8:]))
		nameLen, extra := int64(be.Uint16(ent[14:])), int64(be.Uint32(ent[16:]))
		off = (off + bitmapDirEntLen + extra + nameLen + 7) &^ 7
		if err := c.inc(tOff, tSize*8); err != nil {
			return err
		}
		if tOff&(cs-1) != 0 || tSize > maxL1Bytes/8 {
			c.res.Corruptions++
			break
		}
		table := make([]byte, tSize*8)
		if err := readFile(c.file, table, tOff); err != nil {
			c.res.Corruptions++
			break
		}
		for j := int64(0); j < tSize; j++ {
			e := be.Uint64(table[8*j:])
			o := int64(e & bmeOffsetMask)
			if e&bmeReserved != 0 || o&(cs-1) != 0 || o == 0 && e&bmeAllOnes == 0 && e != 0 || o != 0 && e&bmeAllOnes != 0 {
				c.res.Corruptions++
				continue
			}
			if o == 0 {
				continue
			}
			if err := c.inc(o, cs); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkRefblocks is check_refblocks.
func (c *checker) checkRefblocks() error {
	cs := c.hdr.clusterSize()
	for i, e := range c.reftable {
		off := int64(e & reftOffsetMask)
		cluster := off >> c.hdr.ClusterBits
		if e&reftReserved != 0 {
			c.printf("ERROR refcount table entry %d has reserved bits set\n", i)
			c.res.Corruptions++
			c.rebuildNeeded = true
			continue
		}
		if off&(cs-1) != 0 {
			c.printf("ERROR refcount block %d is not cluster aligned; refcount table entry corrupted\n", i)
			c.res.Corruptions++
			c.rebuildNeeded = true
			continue
		}
		if cluster >= int64(len(c.refs)) {
			if c.fix&FixErrors == 0 {
				c.res.Corruptions++
				c.printf("ERROR refcount block %d is outside image\n", i)
				continue
			}
			c.printf("Repairing refcount block %d is outside image\n", i)
			if err := c.growToCover(off); err != nil {
				c.res.Corruptions++
				c.rebuildNeeded = true
				c.printf("ERROR could not resize image: %s\n", err)
				continue
			}
			c.corruptionsFixed++
			if err := c.inc(off, cs); err != nil {
				return err
			}
			// Just allocated and zeroed: its count is 1.
			continue
		}
		if off != 0 {
			if err := c.inc(off, cs); err != nil {
				return err
			}
			if r := c.refs[cluster]; r != 1 {
				c.printf("ERROR refcount block %d refcount=%d\n", i, r)
				c.res.Corruptions++
				c.rebuildNeeded = true
			}
		}
	}
	return nil
}

// growToCover grows the file (zeroes) to hold the cluster at off, for a
// refcount block past its end, and the counted references with it.
func (c *checker) growToCover(off int64) error {
	cs := c.hdr.clusterSize()
	if off > math.MaxInt64-cs || (off+cs)>>c.hdr.ClusterBits > c.limit {
		return errors.New("Invalid argument")
	}
	if err := c.file.Truncate(off + cs); err != nil {
		return err
	}
	nb := (c.file.Length() + cs - 1) / cs
	if nb > int64(len(c.refs)) {
		c.refs = append(c.refs, make([]uint64, nb-int64(len(c.refs)))...)
	}
	if off>>c.hdr.ClusterBits >= int64(len(c.refs)) {
		return errors.New("Invalid argument")
	}
	return nil
}

// refcount is qcow2_get_refcount: the on-disk refcount of a cluster.
func (c *checker) refcount(cluster int64) (uint64, error) {
	ti := cluster >> c.refblockBits
	if ti >= int64(len(c.reftable)) {
		return 0, nil
	}
	off := int64(c.reftable[ti] & reftOffsetMask)
	if off == 0 {
		return 0, nil
	}
	if off&(c.hdr.clusterSize()-1) != 0 {
		c.signalCorruption(fmt.Sprintf("Refblock offset %#x unaligned (reftable index: %s)", off, chex(ti)))
		return 0, errors.New("Input/output error")
	}
	block, ok := c.refblockCache[off]
	if !ok {
		block = make([]byte, c.hdr.clusterSize())
		if err := readFile(c.file, block, off); err != nil {
			return 0, err
		}
		if len(c.refblockCache) > 64 {
			clear(c.refblockCache)
		}
		c.refblockCache[off] = block
	}
	i := cluster & (1<<c.refblockBits - 1)
	return refcountAt(block, c.hdr.RefcountOrder, i), nil
}

// refcountAt reads entry i of a refcount block of 2^order-bit entries.
func refcountAt(block []byte, order uint32, i int64) uint64 {
	switch order {
	case 0, 1, 2:
		bits := uint(1) << order
		perByte := int64(8 / bits)
		shift := uint(i%perByte) * bits
		return uint64(block[i/perByte]>>shift) & (1<<bits - 1)
	case 3:
		return uint64(block[i])
	case 4:
		return uint64(binary.BigEndian.Uint16(block[2*i:]))
	case 5:
		return uint64(binary.BigEndian.Uint32(block[4*i:]))
	}
	return binary.BigEndian.Uint64(block[8*i:])
}

// compare is compare_refcounts without fixes; it returns the highest
// cluster in use, and whether only a rebuild of the refcount structure can
// fix what it found (a referenced cluster with refcount 0).
func (c *checker) compare() (highest int64, rebuild bool) {
	for i := int64(0); i < int64(len(c.refs)); i++ {
		r1, err := c.refcount(i)
		if err != nil {
			c.printf("Can't get refcount for cluster %d: %s\n", i, err)
			c.res.CheckErrors++
			continue
		}
		r2 := c.refs[i]
		if r1 > 0 || r2 > 0 {
			highest = i
		}
		if r1 != r2 {
			rebuild = rebuild || r1 == 0
			if r1 < r2 {
				c.printf("ERROR cluster %d refcount=%d reference=%d\n", i, r1, r2)
				c.res.Corruptions++
			} else {
				c.printf("Leaked cluster %d refcount=%d reference=%d\n", i, r1, r2)
				c.res.Leaks++
			}
		}
	}
	return highest, rebuild
}

// checkCopied is check_oflag_copied, over the active L1 table as the
// file holds it.
func (c *checker) checkCopied() error {
	h := c.hdr
	l1, err := readL1(c.file, int64(h.L1TableOffset), int64(h.L1Size))
	if err != nil {
		c.res.CheckErrors++
		return err
	}
	return c.scanCopied(l1, c.refcount, nil)
}

// readL1 reads the n entries of an L1 table at off that lie inside the
// file (those past its end read as zero, and need no memory: a header
// may claim a 32 MiB table in a file of a few clusters), a chunk at a
// time rather than through a copy of the whole table.
func readL1(file *block.Node, off, n int64) ([]uint64, error) {
	if avail := (file.Length() - off) / 8; avail < n {
		n = max(0, avail)
	}
	l1 := make([]uint64, n)
	buf := make([]byte, min(n*8, chunkSize))
	for i := int64(0); i < n; {
		k := min(n-i, int64(len(buf))/8)
		if err := readFile(file, buf[:k*8], off+i*8); err != nil {
			return nil, err
		}
		for j := range k {
			l1[i+j] = binary.BigEndian.Uint64(buf[8*j:])
		}
		i += k
	}
	return l1, nil
}

// signalCorruption is qcow2_signal_corruption during a check: said once;
// a repair (the image open for writing) marks the image corrupt, as QEMU
// does (a repair that ends clean clears the mark again).
func (c *checker) signalCorruption(msg string) {
	if c.toldCorrupt {
		return
	}
	c.toldCorrupt = true
	if c.fix == 0 {
		c.printf("qcow2: Image is corrupt: %s; further non-fatal corruption events will be suppressed\n", msg)
		return
	}
	c.printf("qcow2: Marking image as corrupt: %s; further corruption events will be suppressed\n", msg)
	if c.hdr.Version < 3 {
		return
	}
	sec := make([]byte, 512)
	if readFile(c.file, sec, 0) != nil {
		return
	}
	f := binary.BigEndian.Uint64(sec[72:]) | incompatCorrupt
	binary.BigEndian.PutUint64(sec[72:], f)
	if _, err := c.file.WriteAt(sec, 0); err == nil && c.file.Flush() == nil {
		c.hdr.IncompatibleFeatures |= incompatCorrupt
	}
}
