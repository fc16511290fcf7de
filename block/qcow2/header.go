package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// magic is "QFI\xfb", the first four bytes of every qcow2 image.
const magic = 0x514649fb

// Limits QEMU enforces at open (block/qcow2.h); they stop hostile headers.
const (
	minClusterBits = 9
	maxClusterBits = 21

	maxL1Bytes         = 32 << 20 // QCOW_MAX_L1_SIZE
	maxRefTableBytes   = 8 << 20  // QCOW_MAX_REFTABLE_SIZE
	maxSnapshots       = 65536    // QCOW_MAX_SNAPSHOTS
	snapshotHeaderSize = 40       // sizeof(QCowSnapshotHeader)
	maxSnapshotTable   = 1024 * maxSnapshots
	maxSnapshotExtra   = 1024 // QCOW_MAX_SNAPSHOT_EXTRA_DATA

	maxBackingNameLen = 1023

	// maxImageSize keeps every guest offset computation inside int64.
	maxImageSize = math.MaxInt64 &^ (1<<maxClusterBits - 1)
)

// Header sizes: version 2 stops after snapshots_offset; version 3 has at
// least header_length (104) bytes; QEMU's struct (with compression_type and
// its padding) is 112.
const (
	v2HeaderLen     = 72
	v3MinHeaderLen  = 104
	knownHeaderLen  = 112
	compressionByte = 104 // offset of compression_type
)

// Incompatible feature bits.
const (
	incompatDirty       = 1 << 0
	incompatCorrupt     = 1 << 1
	incompatDataFile    = 1 << 2
	incompatCompression = 1 << 3
	incompatExtL2       = 1 << 4

	incompatKnown = incompatDirty | incompatCorrupt | incompatDataFile | incompatCompression | incompatExtL2
)

// Compatible and autoclear feature bits.
const (
	compatLazyRefcounts = 1 << 0

	autoclearBitmaps     = 1 << 0
	autoclearDataFileRaw = 1 << 1
)

// Compression types.
const (
	compressionDeflate = 0
	compressionZstd    = 1
)

// Encryption methods.
const (
	cryptNone = 0
	cryptAES  = 1
	cryptLUKS = 2
)

// header is an image's header as on disk (cluster 0), in host byte order.
// For version 2 the version 3 fields hold the values QEMU assumes.
type header struct {
	Version               uint32
	BackingFileOffset     uint64
	BackingFileSize       uint32
	ClusterBits           uint32
	Size                  uint64
	CryptMethod           uint32
	L1Size                uint32
	L1TableOffset         uint64
	RefcountTableOffset   uint64
	RefcountTableClusters uint32
	NbSnapshots           uint32
	SnapshotsOffset       uint64

	IncompatibleFeatures uint64
	CompatibleFeatures   uint64
	AutoclearFeatures    uint64
	RefcountOrder        uint32
	HeaderLength         uint32
	CompressionType      uint8

	// Tail is the header's bytes from compression_type to header_length
	// (compression_type, its padding, and fields newer than this driver),
	// kept so that a writer can rewrite the header without losing them.
	Tail []byte
}

// clusterSize is 2^cluster_bits; only valid after checkHeader.
func (h *header) clusterSize() int64 { return 1 << h.ClusterBits }

// extL2 reports extended L2 entries (subclusters).
func (h *header) extL2() bool { return h.IncompatibleFeatures&incompatExtL2 != 0 }

// l2Bits is log2 of the number of entries in one L2 table.
func (h *header) l2Bits() uint32 {
	if h.extL2() {
		return h.ClusterBits - 4 // 16-byte entries
	}
	return h.ClusterBits - 3
}

// parseHeader decodes the fixed part of a header from b, the image's
// first bytes (zero-padded by the caller if the file is shorter). It
// checks nothing but what it needs to decode: magic and version.
func parseHeader(b []byte) (*header, error) {
	if len(b) < knownHeaderLen {
		return nil, errors.New("Could not read qcow2 header")
	}
	be := binary.BigEndian
	if be.Uint32(b[0:]) != magic {
		return nil, errors.New("Image is not in qcow2 format")
	}
	h := &header{
		Version:               be.Uint32(b[4:]),
		BackingFileOffset:     be.Uint64(b[8:]),
		BackingFileSize:       be.Uint32(b[16:]),
		ClusterBits:           be.Uint32(b[20:]),
		Size:                  be.Uint64(b[24:]),
		CryptMethod:           be.Uint32(b[32:]),
		L1Size:                be.Uint32(b[36:]),
		L1TableOffset:         be.Uint64(b[40:]),
		RefcountTableOffset:   be.Uint64(b[48:]),
		RefcountTableClusters: be.Uint32(b[56:]),
		NbSnapshots:           be.Uint32(b[60:]),
		SnapshotsOffset:       be.Uint64(b[64:]),
	}
	if h.Version < 2 || h.Version > 3 {
		return nil, fmt.Errorf("Unsupported qcow2 version %d", h.Version)
	}
	if h.Version == 2 {
		h.RefcountOrder = 4
		h.HeaderLength = v2HeaderLen
		return h, nil
	}
	h.IncompatibleFeatures = be.Uint64(b[72:])
	h.CompatibleFeatures = be.Uint64(b[80:])
	h.AutoclearFeatures = be.Uint64(b[88:])
	h.RefcountOrder = be.Uint32(b[96:])
	h.HeaderLength = be.Uint32(b[100:])
	if h.HeaderLength > compressionByte {
		h.CompressionType = b[compressionByte]
	}
	return h, nil
}

// checkClusterBits and the checks below run in QEMU's order
// (qcow2_do_open), each before anything is allocated for what it checks.
func (h *header) checkClusterBits() error {
	if h.ClusterBits < minClusterBits || h.ClusterBits > maxClusterBits {
		return fmt.Errorf("Unsupported cluster size: 2^%d", h.ClusterBits)
	}
	return nil
}

// checkLength checks header_length and the backing file offset, which
// bound the header extension area.
func (h *header) checkLength() error {
	if h.Version == 3 && h.HeaderLength < v3MinHeaderLen {
		return errors.New("qcow2 header too short")
	}
	if int64(h.HeaderLength) > h.clusterSize() {
		return errors.New("qcow2 header exceeds cluster size")
	}
	if h.BackingFileOffset > uint64(h.clusterSize()) {
		return errors.New("Invalid backing file offset")
	}
	return nil
}

// extEnd is where the header extension area ends: at the backing file
// name, or the end of cluster 0.
func (h *header) extEnd() int64 {
	if h.BackingFileOffset != 0 {
		return int64(h.BackingFileOffset)
	}
	return h.clusterSize()
}

// checkCompression validates compression_type against its feature bit.
func (h *header) checkCompression() error {
	switch h.CompressionType {
	case compressionDeflate:
		if h.IncompatibleFeatures&incompatCompression != 0 {
			return errors.New("qcow2: Compression type incompatible feature bit must not be set")
		}
	case compressionZstd:
		if h.IncompatibleFeatures&incompatCompression == 0 {
			return errors.New("qcow2: Compression type incompatible feature bit must be set")
		}
	default:
		return fmt.Errorf("qcow2: unknown compression type: %d", h.CompressionType)
	}
	return nil
}

// checkTables checks everything else of the fixed header: subcluster
// size, refcount width, encryption, and the size and alignment of every
// table it points to, and that the L1 table covers the virtual size.
func (h *header) checkTables() error {
	cs := h.clusterSize()
	if h.extL2() && cs/32 < 1<<minClusterBits {
		return fmt.Errorf("Unsupported subcluster size: %d", cs/32)
	}
	if h.RefcountOrder > 6 {
		return errors.New("Reference count entry width too large; may not exceed 64 bits")
	}
	switch h.CryptMethod {
	case cryptNone:
	case cryptAES:
		return errors.New("qcow2 image is encrypted (AES, crypt_method 1): encrypted images are not supported by minivmm")
	case cryptLUKS:
		return errors.New("qcow2 image is encrypted (LUKS, crypt_method 2): encrypted images are not supported by minivmm")
	default:
		return fmt.Errorf("Unsupported encryption method %d", h.CryptMethod)
	}
	if h.RefcountTableClusters == 0 {
		return errors.New("Image does not contain a reference count table")
	}
	if err := h.validateTable(h.RefcountTableOffset, uint64(h.RefcountTableClusters), uint64(cs), maxRefTableBytes, "Reference count table"); err != nil {
		return err
	}
	if err := h.validateTable(h.SnapshotsOffset, uint64(h.NbSnapshots), snapshotHeaderSize, snapshotHeaderSize*maxSnapshots, "Snapshot table"); err != nil {
		return err
	}
	if err := h.validateTable(h.L1TableOffset, uint64(h.L1Size), 8, maxL1Bytes, "Active L1 table"); err != nil {
		return err
	}
	if h.Size > maxImageSize {
		return fmt.Errorf("Image size %d exceeds the maximum of %d bytes", h.Size, uint64(maxImageSize))
	}
	// size_to_l1: L1 entries needed to map the virtual size.
	shift := h.ClusterBits + h.l2Bits()
	need := h.Size >> shift
	if h.Size&(1<<shift-1) != 0 {
		need++
	}
	if need > math.MaxInt32 {
		return errors.New("Image is too big")
	}
	if uint64(h.L1Size) < need {
		return errors.New("L1 table is too small")
	}
	return nil
}

// validateTable is QEMU's qcow2_validate_table: entries of entryLen bytes
// at offset, at most maxBytes in all, cluster aligned, not reaching past
// INT64_MAX. name ("Active L1 table") is in the message.
func (h *header) validateTable(offset, entries, entryLen, maxBytes uint64, name string) error {
	if entries > maxBytes/entryLen {
		return fmt.Errorf("%s too large", name)
	}
	if math.MaxInt64-entries*entryLen < offset || offset&uint64(h.clusterSize()-1) != 0 {
		return fmt.Errorf("%s offset invalid", name)
	}
	return nil
}
