package qcow2

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// L1 and L2 entry bits.
const (
	offsetMask      = 0x00fffffffffffe00 // bits 9-55: L2 table / host cluster offset
	l1Reserved      = 0x7f000000000001ff // L1E_RESERVED_MASK
	l2StdReserved   = 0x3f000000000001fe // L2E_STD_RESERVED_MASK
	flagCopied      = 1 << 63
	flagCompressed  = 1 << 62
	flagZero        = 1 << 0
	subclusters     = 32
	allocBitmapMask = 1<<subclusters - 1
)

// extentKind is what a guest range maps to.
type extentKind uint8

const (
	extUnallocated extentKind = iota // read from the backing file, or zeroes
	extZero                          // reads as zeroes (zero-plain, zero-alloc)
	extData                          // a normal cluster: bytes at host
	extCompressed                    // one compressed cluster
)

// extent is a guest range [off, off+n) with one mapping.
type extent struct {
	kind extentKind
	n    int64
	host int64 // extData, and extZero with hasHost: host offset of the range's first byte
	// hasHost: an extZero range in a cluster that keeps its host cluster
	// (zero-alloc), whose offset block status reports as QEMU does.
	hasHost bool
	l2e     uint64 // extCompressed: the L2 entry (descriptor)
}

// corruptError is metadata that breaks the format: QEMU signals
// corruption and fails the request with EIO.
type corruptError struct{ msg string }

func (e *corruptError) Error() string { return "qcow2: image is corrupt: " + e.msg }
func (e *corruptError) Unwrap() error { return unix.EIO }

// chex is v as C's %#x prints it: 0 without the 0x QEMU's messages
// would otherwise differ by.
func chex(v int64) string {
	if v == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", v)
}

func corrupt(format string, a ...any) error {
	return &corruptError{msg: fmt.Sprintf(format, a...)}
}

// geometry is what address translation needs of the header, computed once.
type geometry struct {
	clusterBits  uint32
	clusterSize  int64
	l2Bits       uint32 // log2 of entries per L2 table
	extL2        bool
	external     bool   // data clusters in a data file (datafile.go)
	entryWords   int    // uint64s per L2 entry: 1, or 2 with extended L2
	scBits       uint32 // log2 of the subcluster size (= clusterBits without extended L2)
	sliceEntries int64  // L2 entries per cache slice
	sliceBytes   int64
	// compressed descriptors: host offset in bits 0..csizeShift-1, then
	// the number of additional sectors (csizeMask wide).
	csizeShift uint32
	csizeMask  uint64
}

func newGeometry(h *header, sliceBytes int) geometry {
	g := geometry{
		clusterBits: h.ClusterBits,
		clusterSize: h.clusterSize(),
		l2Bits:      h.l2Bits(),
		extL2:       h.extL2(),
		external:    h.IncompatibleFeatures&incompatDataFile != 0,
		entryWords:  1,
		scBits:      h.ClusterBits,
		sliceBytes:  int64(sliceBytes),
		csizeShift:  62 - (h.ClusterBits - 8),
		csizeMask:   1<<(h.ClusterBits-8) - 1,
	}
	if g.extL2 {
		g.entryWords = 2
		g.scBits = h.ClusterBits - 5
	}
	g.sliceEntries = int64(sliceBytes) / int64(8*g.entryWords)
	return g
}

// compressedRange is where a compressed cluster's bytes are in the file:
// QEMU's qcow2_parse_compressed_l2_entry.
func (g *geometry) compressedRange(l2e uint64) (off, size int64) {
	off = int64(l2e & (1<<g.csizeShift - 1))
	sectors := int64((l2e>>g.csizeShift)&g.csizeMask) + 1
	return off, sectors*512 - off&511
}

// mapper finds what a guest offset maps to: the L1 table and the L2 cache.
type mapper struct {
	geometry
	l1mu  sync.RWMutex // guards l1 (the write path changes it)
	l1    []uint64     // may be shorter than l1_size: the rest was past EOF (zero)
	cache *l2Cache
}

// extentAt maps the guest range [off, off+n): it returns the extent at
// off, as long as possible (at most n), within one L2 slice. Compressed
// clusters are returned one at a time.
func (m *mapper) extentAt(off, n int64) (extent, error) {
	cs := m.clusterSize
	cluster := off >> m.clusterBits
	l1i := cluster >> m.l2Bits
	l2i := cluster & (1<<m.l2Bits - 1)
	inCluster := off & (cs - 1)

	// Unallocated to the end of the slice, or of n.
	sliceEnd := func() int64 {
		left := (m.sliceEntries - l2i%m.sliceEntries) * cs
		return min(n, left-inCluster)
	}
	m.l1mu.RLock()
	var l1e uint64
	if l1i < int64(len(m.l1)) {
		l1e = m.l1[l1i]
	}
	m.l1mu.RUnlock()
	if l1e&l1Reserved != 0 {
		return extent{}, corrupt("L1 entry %#x at index %#x has reserved bits set", l1e, l1i)
	}
	l2Off := int64(l1e & offsetMask)
	if l2Off == 0 {
		return extent{kind: extUnallocated, n: sliceEnd()}, nil
	}
	if l2Off&(cs-1) != 0 {
		return extent{}, corrupt("L2 table offset %#x unaligned (L1 index: %s)", l2Off, chex(l1i))
	}
	slice := l2i / m.sliceEntries
	table, err := m.cache.get(l2Off + slice*m.sliceBytes)
	if err != nil {
		return extent{}, err
	}
	var ext extent
	for i := l2i % m.sliceEntries; i < m.sliceEntries && n > 0; i++ {
		e := loadEntry(table, int(i)*m.entryWords*8)
		var bitmap uint64
		if m.extL2 {
			bitmap = loadEntry(table, int(i)*16+8)
		}
		kind, host, run, err := m.decode(e, bitmap, inCluster)
		if ce := (*corruptError)(nil); errors.As(err, &ce) {
			return extent{}, corrupt("%s (L2 offset: %#x, L2 index: %s)", ce.msg, l2Off, chex(slice*m.sliceEntries+i))
		} else if err != nil {
			return extent{}, fmt.Errorf("%w (L2 offset: %#x, L2 index: %#x)", err, l2Off, slice*m.sliceEntries+i)
		}
		run = min(run, n)
		switch {
		case ext.n == 0:
			ext = extent{kind: kind, n: run, host: host, hasHost: kind == extZero && host >= 0}
			if kind == extCompressed {
				ext.l2e = e
				return ext, nil
			}
		case kind != ext.kind || kind == extCompressed || kind == extData && host != ext.host+ext.n,
			ext.hasHost != (kind == extZero && host >= 0), ext.hasHost && host != ext.host+ext.n:
			return ext, nil
		default:
			ext.n += run
		}
		if inCluster+run < cs {
			return ext, nil // the cluster's next subcluster differs
		}
		n -= run
		inCluster = 0
	}
	return ext, nil
}

// decode interprets one L2 entry (and, with extended L2, its subcluster
// bitmap) at byte inCluster of its cluster: the kind there, the host offset
// of that byte for data, and how many bytes from there to the end of the
// cluster share the kind (a run of subclusters, or the rest of the cluster).
func (m *mapper) decode(e, bitmap uint64, inCluster int64) (extentKind, int64, int64, error) {
	cs := m.clusterSize
	rest := cs - inCluster
	if e&flagCompressed != 0 {
		off, _ := m.compressedRange(e)
		if off >= 1<<56 {
			return 0, 0, 0, corrupt("compressed cluster offset %#x out of range", off)
		}
		return extCompressed, 0, rest, nil
	}
	if e&l2StdReserved != 0 {
		// Not signalled as corruption: QEMU reads past these bits.
		return 0, 0, 0, fmt.Errorf("qcow2: L2 entry %#x has reserved bits set: %w", e, unix.EIO)
	}
	hostCluster := int64(e & offsetMask)
	if hostCluster&(cs-1) != 0 {
		return 0, 0, 0, corrupt("Cluster allocation offset %#x unaligned", hostCluster)
	}
	if !m.extL2 {
		switch {
		case e&flagZero != 0 && m.mapsHost(e):
			return extZero, hostCluster + inCluster, rest, nil // zero-alloc
		case e&flagZero != 0:
			return extZero, -1, rest, nil
		case !m.mapsHost(e):
			return extUnallocated, 0, rest, nil
		}
		return extData, hostCluster + inCluster, rest, nil
	}

	alloc, zero := bitmap&allocBitmapMask, bitmap>>subclusters
	if !m.mapsHost(e) && alloc != 0 || alloc&zero != 0 {
		return 0, 0, 0, corrupt("Invalid cluster entry found ") // QEMU's words (and space)
	}
	kindOf := func(sc uint) extentKind {
		switch {
		case zero&(1<<sc) != 0:
			return extZero
		case alloc&(1<<sc) != 0:
			return extData
		}
		return extUnallocated
	}
	sc := uint(inCluster >> m.scBits)
	kind := kindOf(sc)
	end := sc + 1
	for end < subclusters && kindOf(end) == kind {
		end++
	}
	run := int64(end)<<m.scBits - inCluster
	switch kind {
	case extData:
		return kind, hostCluster + inCluster, run, nil
	case extZero:
		if m.mapsHost(e) {
			return kind, hostCluster + inCluster, run, nil
		}
		return kind, -1, run, nil
	}
	return kind, 0, run, nil
}
