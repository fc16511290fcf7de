package qcow2

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
