package qcow2

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"weak"
)

// FormatInfo is what `img info` shows of a qcow2 image under
// "format-specific" (QEMU's ImageInfoSpecificQCow2) and its cluster size.
type FormatInfo struct {
	Version       uint32 // 2 ("0.10") or 3 ("1.1")
	ClusterSize   int64
	Compression   string // "zlib" or "zstd"
	LazyRefcounts bool
	RefcountBits  int
	Corrupt       bool
	ExtendedL2    bool
	BackingFile   string // as the header names it; "" when none
	BackingFormat string // from the backing format extension; "" when none
	Dirty         bool
}

// FormatSpecific describes the image's header.
func (img *image) FormatSpecific() FormatInfo {
	h := img.hdr
	fi := FormatInfo{
		Version:       h.Version,
		ClusterSize:   h.clusterSize(),
		Compression:   "zlib",
		LazyRefcounts: h.CompatibleFeatures&compatLazyRefcounts != 0,
		RefcountBits:  1 << h.RefcountOrder,
		Corrupt:       h.IncompatibleFeatures&incompatCorrupt != 0,
		ExtendedL2:    h.extL2(),
		BackingFile:   img.backingName,
		Dirty:         h.IncompatibleFeatures&incompatDirty != 0,
	}
	if h.CompressionType == compressionZstd {
		fi.Compression = "zstd"
	}
	if img.ext != nil {
		fi.BackingFormat = img.ext.BackingFormat
	}
	return fi
}

// SnapshotInfo is one internal snapshot as `img info` lists it (QEMU's
// QEMUSnapshotInfo).
type SnapshotInfo struct {
	ID, Name    string
	VMStateSize uint64
	DateSec     uint32
	DateNsec    uint32
	VMClockNsec uint64
	Icount      int64 // -1: the entry does not record one
}

// Snapshots reads the snapshot table's entries in full: the image keeps
// only what reading and writing need of them. The table's layout was
// checked at open, so it is walked by the entries kept then.
func (img *image) Snapshots() ([]SnapshotInfo, error) {
	if len(img.snapshots) == 0 {
		return nil, nil
	}
	be := binary.BigEndian
	r := newChunkReader(img.file)
	r.base = int64(img.hdr.SnapshotsOffset)
	var off int64
	infos := make([]SnapshotInfo, 0, len(img.snapshots))
	// The header, then the extra data QEMU 7.2 knows: a 64-bit VM state
	// size, the disk size and the icount.
	var buf [snapshotHeaderSize + 24]byte
	for _, sn := range img.snapshots {
		off = (off + 7) &^ 7
		extra := min(int(sn.ExtraSize), 24)
		p := buf[:snapshotHeaderSize+extra]
		if err := r.read(p, off); err != nil {
			return nil, fmt.Errorf("reading snapshot %s: %w", sn.ID, err)
		}
		si := SnapshotInfo{ID: sn.ID, Name: sn.Name, VMStateSize: uint64(be.Uint32(p[32:])),
			DateSec: be.Uint32(p[16:]), DateNsec: be.Uint32(p[20:]), VMClockNsec: be.Uint64(p[24:]), Icount: -1}
		if extra >= 8 {
			si.VMStateSize = be.Uint64(p[snapshotHeaderSize:])
		}
		if extra >= 24 {
			si.Icount = int64(be.Uint64(p[snapshotHeaderSize+16:]))
		}
		infos = append(infos, si)
		off += snapshotHeaderSize + int64(sn.ExtraSize) + int64(len(sn.ID)) + int64(len(sn.Name))
	}
	return infos, nil
}

// preallocated remembers per open image whether its metadata looks
// preallocated, which QEMU decides once per open. It lives here, keyed
// weakly, rather than in image, whose fields the write path owns.
var preallocated sync.Map // weak.Pointer[image] -> bool

// metadataPreallocated is QEMU's qcow2_detect_metadata_preallocation:
// true when clearly more clusters have a refcount than the file has
// allocated on the host. What cannot be read counts as not preallocated,
// as in QEMU.
func (img *image) metadataPreallocated() bool {
	key := weak.Make(img)
	if v, ok := preallocated.Load(key); ok {
		return v.(bool)
	}
	v := img.detectMetadataPreallocation()
	if _, loaded := preallocated.LoadOrStore(key, v); !loaded {
		runtime.AddCleanup(img, func(k weak.Pointer[image]) { preallocated.Delete(k) }, key)
	}
	return v
}

func (img *image) detectMetadataPreallocation() bool {
	onHost := img.file.Info().ActualSize
	if onHost < 0 {
		return false
	}
	cs := img.clusterSize
	hostClusters := onHost / cs
	threshold := max(hostClusters*10/9, hostClusters+2)
	end := (img.file.Length() + cs - 1) / cs
	rc, err := newRefcounts(img)
	if err != nil {
		return false
	}
	var used int64
	for i := int64(0); i < end && used < threshold; i++ {
		r, err := rc.get(i)
		if err != nil {
			return false
		}
		if r != 0 {
			used++
		}
	}
	return used >= threshold
}
