package qcow2

import "strings"

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
	// An external data file: HasDataFile, the name the header records
	// ("" when none is recorded) and data-file-raw.
	HasDataFile bool
	DataFile    string
	DataFileRaw bool
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
	fi.DataFile, fi.DataFileRaw, fi.HasDataFile = img.DataFile()
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

// Snapshots lists the internal snapshots, in table order.
func (img *image) Snapshots() ([]SnapshotInfo, error) {
	if len(img.snapshots) == 0 {
		return nil, nil
	}
	infos := make([]SnapshotInfo, len(img.snapshots))
	for i, sn := range img.snapshots {
		infos[i] = sn.SnapshotInfo
		// QEMU keeps them as C strings: they end at a NUL byte.
		infos[i].ID, _, _ = strings.Cut(sn.ID, "\x00")
		infos[i].Name, _, _ = strings.Cut(sn.Name, "\x00")
	}
	return infos, nil
}

// metadataPreallocated is QEMU's qcow2_detect_metadata_preallocation,
// decided once per open as QEMU does: true when clearly more clusters
// have a refcount than the file has allocated on the host. What cannot be
// read counts as not preallocated, as in QEMU.
func (img *image) metadataPreallocated() bool {
	img.preallocOnce.Do(func() { img.prealloc = img.detectMetadataPreallocation() })
	return img.prealloc
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
