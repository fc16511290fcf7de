package qcow2

// Creating a new, empty qcow2 image (qemu-img create -f qcow2).
//
// Layout, in clusters: 0 the header (with its extensions and the backing
// file name), then the refcount table, the refcount blocks, the L1 table,
// and with preallocation the L2 tables followed by the data clusters. Every
// cluster in use gets refcount 1, so that qemu-img check finds neither
// leaks nor corruptions.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"minivmm/qemuopen"
)

// CreateOptions are qcow2's creation options, as qemu-img create's -o.
type CreateOptions struct {
	Size          uint64 // virtual size in bytes; rounded up to 512
	ClusterSize   int64  // 0 means 64 KiB
	Version       int    // 2 (compat=0.10) or 3 (compat=1.1); 0 means 3
	RefcountBits  int    // 0 means 16
	LazyRefcounts bool
	ExtendedL2    bool
	Compression   string // "zlib" (default) or "zstd"
	Preallocation string // "off" (default), "metadata", "falloc" or "full"
	BackingFile   string
	BackingFormat string
	// DataFile names an external data file (the caller creates it): the
	// data clusters go there, at their guest offsets (datafile.go).
	DataFile    string
	DataFileRaw bool // data-file-raw: the data file stays a raw image
}

// CreateTarget is where an image is written: a new or truncated file.
type CreateTarget interface {
	io.WriterAt
	Truncate(size int64) error
}

// allocator is a CreateTarget that can reserve space (preallocation=falloc).
type allocator interface {
	Allocate(off, n int64) error
}

// FdTarget is a CreateTarget over an open file descriptor, which it does
// not own.
type FdTarget int

// WriteAt writes p at off with pwrite, retrying short writes.
func (f FdTarget) WriteAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Pwrite(int(f), p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		if n == 0 {
			return done, io.ErrShortWrite
		}
		done += n
	}
	return done, nil
}

// Truncate sets the file's length.
func (f FdTarget) Truncate(size int64) error { return unix.Ftruncate(int(f), size) }

// Allocate reserves [off, off+n) with fallocate.
func (f FdTarget) Allocate(off, n int64) error {
	if n <= 0 {
		return nil
	}
	return unix.Fallocate(int(f), 0, off, n)
}

// normalize fills in defaults and checks the options in QEMU's words.
func (o *CreateOptions) normalize() error {
	if o.ClusterSize == 0 {
		o.ClusterSize = 1 << 16
	}
	if o.Version == 0 {
		o.Version = 3
	}
	if o.RefcountBits == 0 {
		o.RefcountBits = 16
	}
	if o.Compression == "" {
		o.Compression = "zlib"
	}
	if o.Preallocation == "" {
		o.Preallocation = "off"
	}
	o.Size = (o.Size + 511) &^ 511
	cs := o.ClusterSize
	if cs < 1<<minClusterBits || cs > 1<<maxClusterBits || cs&(cs-1) != 0 {
		return errors.New("Cluster size must be a power of two between 512 and 2048k")
	}
	if o.Version != 2 && o.Version != 3 {
		return fmt.Errorf("Invalid compat version %d", o.Version)
	}
	if o.ExtendedL2 {
		if o.Version < 3 {
			return errors.New("Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)")
		}
		if cs < 16384 {
			return errors.New("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
		}
	}
	rb := o.RefcountBits
	if rb < 1 || rb > 64 || rb&(rb-1) != 0 {
		return errors.New("Refcount width must be a power of two and may not exceed 64 bits")
	}
	if o.Version < 3 && rb != 16 {
		return errors.New("Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)")
	}
	if o.Version < 3 && o.LazyRefcounts {
		return errors.New("Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)")
	}
	switch o.Compression {
	case "zlib":
	case "zstd":
		if o.Version < 3 {
			return errors.New("Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)")
		}
	default:
		return fmt.Errorf("Parameter 'compression-type' does not accept value '%s'", o.Compression)
	}
	switch o.Preallocation {
	case "off", "metadata", "falloc", "full":
	default:
		return fmt.Errorf("Parameter 'preallocation' does not accept value '%s'", o.Preallocation)
	}
	if err := o.checkDataFile(); err != nil {
		return err
	}
	if o.BackingFile != "" && o.Preallocation != "off" && !o.ExtendedL2 {
		return errors.New("Backing file and preallocation can only be used at the same time if extended_l2 is on")
	}
	if o.BackingFile == "" && o.BackingFormat != "" {
		return errors.New("Backing format cannot be used without backing file")
	}
	if len(o.BackingFile) > maxBackingNameLen {
		return errors.New("Backing file name too long")
	}
	if len(o.BackingFormat) > maxBackingFormatLen {
		return fmt.Errorf("Backing format name too long: '%s'", o.BackingFormat)
	}
	if o.headerBytes() > uint64(cs) {
		return &BackingError{Name: o.BackingFile, Format: o.BackingFormat, Err: unix.ENOSPC}
	}
	if l1, _ := o.geometry(); l1*8 > maxL1Bytes || o.Size > maxImageSize {
		return errors.New("The image size is too large for file format 'qcow2' (try using a larger cluster size)")
	}
	return nil
}

// BackingError is a backing file name that cannot be recorded: with
// ENOSPC, the header, its extensions and the name do not fit in the
// first cluster.
type BackingError struct {
	Name, Format string
	Err          unix.Errno
}

func (e *BackingError) Error() string {
	return fmt.Sprintf("Could not assign backing file '%s' with format '%s': %s", e.Name, e.Format, qemuopen.Strerror(e.Err))
}

func (e *BackingError) Unwrap() error { return e.Err }

// withFeatureTable: as QEMU, no feature name table with clusters of 4 KiB
// or less, where its 392 bytes would leave (with 512-byte clusters)
// almost no room for a backing file name.
func (o *CreateOptions) withFeatureTable() bool { return o.Version == 3 && o.ClusterSize > 4096 }

// headerBytes is what cluster 0 holds: the header, its extensions, their
// end marker and the backing file name.
func (o *CreateOptions) headerBytes() uint64 {
	n := uint64(v2HeaderLen)
	if o.Version == 3 {
		n = knownHeaderLen
	}
	ext := func(size int) { n += 8 + (uint64(size)+7)&^7 }
	if o.BackingFormat != "" {
		ext(len(o.BackingFormat))
	}
	if o.DataFile != "" {
		ext(len(o.DataFile))
	}
	if o.withFeatureTable() {
		ext(len(qemuFeatureTable()))
	}
	return n + 8 + uint64(len(o.BackingFile))
}

// geometry returns the L1 table's entries and the number of data clusters.
func (o *CreateOptions) geometry() (l1Entries, dataClusters uint64) {
	cs := uint64(o.ClusterSize)
	entry := uint64(8)
	if o.ExtendedL2 {
		entry = 16
	}
	l2Cover := cs * (cs / entry)
	return (o.Size + l2Cover - 1) / l2Cover, (o.Size + cs - 1) / cs
}

// ValidateCreate checks o as Create would, without writing anything.
func ValidateCreate(o CreateOptions) error { return o.normalize() }

// Create lays out a new, empty image described by o on f, which must be
// empty (or be truncated by Create: it sets the length itself).
func Create(f CreateTarget, o CreateOptions) error {
	if err := o.normalize(); err != nil {
		return err
	}
	cs := uint64(o.ClusterSize)
	bits := uint32(0)
	for 1<<bits < cs {
		bits++
	}
	l1Entries, nData := o.geometry()
	l1Clusters := (l1Entries*8 + cs - 1) / cs
	var nL2 uint64
	prealloc := o.Preallocation != "off"
	if !prealloc {
		nData = 0
	} else {
		nL2 = l1Entries
	}
	// With a data file, the data clusters are there, not in the file.
	inFile := nData
	if o.DataFile != "" {
		inFile = 0
	}
	// Refcount structures cover themselves: iterate to a fixed point.
	perBlock := cs * 8 / uint64(o.RefcountBits)
	base := 1 + l1Clusters + nL2 + inFile
	var rb, rt uint64 = 1, 1
	for {
		total := base + rb + rt
		nrb := (total + perBlock - 1) / perBlock
		nrt := (nrb*8 + cs - 1) / cs
		if nrb == rb && nrt == rt {
			break
		}
		rb, rt = max(rb, nrb), max(rt, nrt)
	}
	if rt*cs > maxRefTableBytes {
		return errors.New("The image size is too large for file format 'qcow2' (try using a larger cluster size)")
	}
	rtOff := cs
	rbOff := rtOff + rt*cs
	l1Off := rbOff + rb*cs
	l2Off := l1Off + l1Clusters*cs
	dataOff := l2Off + nL2*cs
	used := base + rb + rt
	end := used * cs
	if !prealloc {
		// As qemu-img: the file ends with the L1 table's last entry.
		end = l1Off + l1Entries*8
		if l1Entries == 0 {
			end = l1Off
		}
	}

	be := binary.BigEndian
	// Start from an empty file, its final length reserved.
	if err := f.Truncate(0); err != nil {
		return err
	}
	if err := f.Truncate(int64(end)); err != nil {
		return err
	}
	if o.DataFile == "" && (o.Preallocation == "falloc" || o.Preallocation == "full") {
		if a, ok := f.(allocator); ok && o.Preallocation == "falloc" {
			if err := a.Allocate(int64(dataOff), int64(nData*cs)); err != nil {
				return err
			}
		}
		if o.Preallocation == "full" {
			zero := make([]byte, min(uint64(1<<20), max(nData*cs, 1)))
			for off := dataOff; off < dataOff+nData*cs; off += uint64(len(zero)) {
				n := min(uint64(len(zero)), dataOff+nData*cs-off)
				if _, err := f.WriteAt(zero[:n], int64(off)); err != nil {
					return err
				}
			}
		}
	}

	// Refcounts first: every cluster below `used` has refcount 1.
	blk := make([]byte, cs)
	for b := uint64(0); b < rb; b++ {
		clear(blk)
		first := b * perBlock
		n := min(perBlock, used-min(used, first))
		for i := uint64(0); i < n; i++ {
			setRefcount(blk, i, o.RefcountBits, 1)
		}
		if _, err := f.WriteAt(blk, int64(rbOff+b*cs)); err != nil {
			return err
		}
	}
	table := make([]byte, rt*cs)
	for b := uint64(0); b < rb; b++ {
		be.PutUint64(table[b*8:], rbOff+b*cs)
	}
	if _, err := f.WriteAt(table, int64(rtOff)); err != nil {
		return err
	}

	// L2 tables and L1 (preallocation only: otherwise L1 stays all zero).
	if prealloc {
		entry := uint64(8)
		if o.ExtendedL2 {
			entry = 16
		}
		perL2 := cs / entry
		l2 := make([]byte, cs)
		for t := uint64(0); t < nL2; t++ {
			clear(l2)
			for i := uint64(0); i < perL2; i++ {
				c := t*perL2 + i
				if c >= nData {
					break
				}
				host := dataOff + c*cs
				if o.DataFile != "" {
					host = c * cs // a data file: at the guest offset
				}
				be.PutUint64(l2[i*entry:], host|l2Copied)
			}
			if _, err := f.WriteAt(l2, int64(l2Off+t*cs)); err != nil {
				return err
			}
		}
		l1 := make([]byte, l1Entries*8)
		for t := uint64(0); t < nL2; t++ {
			be.PutUint64(l1[t*8:], (l2Off+t*cs)|l2Copied)
		}
		if _, err := f.WriteAt(l1, int64(l1Off)); err != nil {
			return err
		}
	}

	// The header last: until it is written the file is no image.
	h := make([]byte, cs)
	be.PutUint32(h[0:], magic)
	be.PutUint32(h[4:], uint32(o.Version))
	be.PutUint32(h[20:], bits)
	be.PutUint64(h[24:], o.Size)
	be.PutUint32(h[36:], uint32(l1Entries))
	be.PutUint64(h[40:], l1Off)
	be.PutUint64(h[48:], rtOff)
	be.PutUint32(h[56:], uint32(rt))
	pos := uint64(v2HeaderLen)
	if o.Version == 3 {
		var incompat, compat uint64
		if o.ExtendedL2 {
			incompat |= incompatExtL2
		}
		if o.DataFile != "" {
			incompat |= incompatDataFile
		}
		if o.DataFileRaw {
			be.PutUint64(h[88:], autoclearDataFileRaw)
		}
		if o.Compression == "zstd" {
			incompat |= incompatCompression
			h[compressionByte] = compressionZstd
		}
		if o.LazyRefcounts {
			compat |= compatLazyRefcounts
		}
		be.PutUint64(h[72:], incompat)
		be.PutUint64(h[80:], compat)
		order := uint32(0)
		for 1<<order < o.RefcountBits {
			order++
		}
		be.PutUint32(h[96:], order)
		be.PutUint32(h[100:], knownHeaderLen)
		pos = knownHeaderLen
	}
	putExt := func(typ uint32, data []byte) error {
		padded := (uint64(len(data)) + 7) &^ 7
		if pos+8+padded > cs {
			return errors.New("Header extensions do not fit in the first cluster")
		}
		be.PutUint32(h[pos:], typ)
		be.PutUint32(h[pos+4:], uint32(len(data)))
		copy(h[pos+8:], data)
		pos += 8 + padded
		return nil
	}
	if o.BackingFormat != "" {
		if err := putExt(extBackingFormat, []byte(o.BackingFormat)); err != nil {
			return err
		}
	}
	if o.DataFile != "" {
		if err := putExt(extDataFile, []byte(o.DataFile)); err != nil {
			return err
		}
	}
	if o.withFeatureTable() {
		if err := putExt(extFeatureTable, qemuFeatureTable()); err != nil {
			return err
		}
	}
	pos += 8 // end of extensions
	if o.BackingFile != "" {
		if pos+uint64(len(o.BackingFile)) > cs {
			return errors.New("Backing file name too long")
		}
		be.PutUint64(h[8:], pos)
		be.PutUint32(h[16:], uint32(len(o.BackingFile)))
		copy(h[pos:], o.BackingFile)
		pos += uint64(len(o.BackingFile))
	}
	if _, err := f.WriteAt(h[:min(cs, end)], 0); err != nil {
		return err
	}
	return nil
}

// l2Copied is bit 63 of L1 and L2 entries: refcount exactly 1.
const l2Copied = 1 << 63

// setRefcount stores v as entry i of a refcount block of width bits.
func setRefcount(blk []byte, i uint64, width int, v uint64) {
	switch {
	case width < 8:
		bit := i * uint64(width)
		mask := byte(1<<width - 1)
		sh := bit % 8
		blk[bit/8] = blk[bit/8]&^(mask<<sh) | byte(v)&mask<<sh
	case width == 8:
		blk[i] = byte(v)
	case width == 16:
		binary.BigEndian.PutUint16(blk[i*2:], uint16(v))
	case width == 32:
		binary.BigEndian.PutUint32(blk[i*4:], uint32(v))
	default:
		binary.BigEndian.PutUint64(blk[i*8:], v)
	}
}

// qemuFeatureTable is the feature name table QEMU writes into every image.
func qemuFeatureTable() []byte {
	names := []feature{
		{0, 0, "dirty bit"},
		{0, 1, "corrupt bit"},
		{0, 2, "external data file"},
		{0, 3, "compression type"},
		{0, 4, "extended L2 entries"},
		{1, 0, "lazy refcounts"},
		{2, 0, "bitmaps"},
		{2, 1, "raw external data"},
	}
	b := make([]byte, len(names)*featureEntrySize)
	for i, f := range names {
		e := b[i*featureEntrySize:]
		e[0], e[1] = f.Type, f.Bit
		copy(e[2:featureEntrySize], f.Name)
	}
	return b
}
