package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Header extension types.
const (
	extEnd           = 0x00000000
	extBackingFormat = 0xe2792aca
	extFeatureTable  = 0x6803f857
	extBitmaps       = 0x23852875
	extCrypto        = 0x0537be77
	extDataFile      = 0x44415441
)

// Limits on extensions (QEMU's).
const (
	maxBackingFormatLen = 15 // bs->backing_format is 16 bytes with its NUL
	featureEntrySize    = 48
	bitmapsExtSize      = 24
	maxBitmaps          = 65535
	maxBitmapDirSize    = 1024 * maxBitmaps
)

// extension is one header extension as found, in order.
type extension struct {
	Type uint32
	Data []byte
}

// feature is one entry of the feature name table.
type feature struct {
	Type uint8 // 0 incompatible, 1 compatible, 2 autoclear
	Bit  uint8
	Name string
}

// extensions is what the header extension area holds. All is every
// extension in on-disk order, known or not, so that a writer can write
// back the ones it does not understand unchanged.
type extensions struct {
	All           []extension
	BackingFormat string
	HasBackingFmt bool
	Features      []feature
	DataFile      string
	HasDataFile   bool
	HasBitmaps    bool
}

// parseExtensions reads the extensions in area, the bytes of cluster 0
// from header_length to the end of the extension area (see header.extEnd).
// With lenient set it only collects what it can (for naming unknown
// features in an error) and never fails.
func parseExtensions(h *header, area []byte, lenient bool) (*extensions, error) {
	be := binary.BigEndian
	x := &extensions{}
	for off := 0; off < len(area); {
		if len(area)-off < 8 {
			if lenient {
				break
			}
			return nil, errors.New("Header extension too large")
		}
		typ, n := be.Uint32(area[off:]), be.Uint32(area[off+4:])
		off += 8
		if uint64(n) > uint64(len(area)-off) {
			if lenient {
				break
			}
			return nil, errors.New("Header extension too large")
		}
		if typ == extEnd {
			break
		}
		data := area[off : off+int(n)]
		off += int(n+7) &^ 7
		if off > len(area) {
			off = len(area)
		}
		x.All = append(x.All, extension{Type: typ, Data: append([]byte(nil), data...)})
		switch typ {
		case extBackingFormat:
			if n > maxBackingFormatLen {
				if lenient {
					continue
				}
				return nil, fmt.Errorf("ERROR: ext_backing_format: len=%d too large (>=%d)", n, maxBackingFormatLen+1)
			}
			x.BackingFormat, x.HasBackingFmt = string(data), true
		case extFeatureTable:
			x.Features = parseFeatures(data)
		case extCrypto:
			if lenient {
				continue
			}
			if h.CryptMethod != cryptLUKS {
				return nil, errors.New("CRYPTO header extension only expected with LUKS encryption method")
			}
		case extBitmaps:
			if lenient {
				continue
			}
			if err := checkBitmapsExt(h, data); err != nil {
				return nil, err
			}
			x.HasBitmaps = true
		case extDataFile:
			x.DataFile, x.HasDataFile = string(data), true
		}
	}
	return x, nil
}

// parseFeatures decodes a feature name table; as in QEMU an entry with an
// empty name ends it, and a table whose length is not a whole number of
// entries reads as if zero-padded (QEMU reads it into a zeroed buffer two
// entries longer): a short last entry still names its bit.
func parseFeatures(data []byte) []feature {
	var fs []feature
	data = append(data[:len(data):len(data)], make([]byte, 2*featureEntrySize)...)
	for ; len(data) >= featureEntrySize; data = data[featureEntrySize:] {
		name := data[2:featureEntrySize]
		if i := strings.IndexByte(string(name), 0); i >= 0 {
			name = name[:i]
		}
		if len(name) == 0 {
			break
		}
		fs = append(fs, feature{Type: data[0], Bit: data[1], Name: string(name)})
	}
	return fs
}

// checkBitmapsExt validates the bitmaps extension as QEMU does at open.
// Without the autoclear bit its data is stale, and ignored.
func checkBitmapsExt(h *header, data []byte) error {
	if len(data) != bitmapsExtSize {
		return errors.New("bitmaps_ext: Invalid extension length")
	}
	if h.AutoclearFeatures&autoclearBitmaps == 0 {
		return nil
	}
	be := binary.BigEndian
	nb, reserved := be.Uint32(data[0:]), be.Uint32(data[4:])
	dirSize, dirOff := be.Uint64(data[8:]), be.Uint64(data[16:])
	switch {
	case reserved != 0:
		return errors.New("bitmaps_ext: Reserved field is not zero")
	case nb > maxBitmaps:
		return fmt.Errorf("bitmaps_ext: Image has %d bitmaps, exceeding the QEMU supported maximum of %d", nb, maxBitmaps)
	case nb == 0:
		return errors.New("found bitmaps extension with zero bitmaps")
	case dirOff&uint64(h.clusterSize()-1) != 0:
		return errors.New("bitmaps_ext: invalid bitmap directory offset")
	case dirSize > maxBitmapDirSize:
		return fmt.Errorf("bitmaps_ext: bitmap directory size (%d) exceeds the maximum supported size (%d)", dirSize, maxBitmapDirSize)
	}
	return nil
}

// unsupportedFeatures names the incompatible feature bits in mask that
// this driver does not know, from the image's feature name table where it
// has them, in QEMU's words.
func unsupportedFeatures(table []feature, mask uint64) error {
	var names []string
	for _, f := range table {
		if f.Type == 0 && f.Bit < 64 && mask&(1<<f.Bit) != 0 {
			names = append(names, truncate(f.Name, 46))
			mask &^= 1 << f.Bit
		}
	}
	if mask != 0 {
		names = append(names, fmt.Sprintf("Unknown incompatible feature: %x", mask))
	}
	return fmt.Errorf("Unsupported qcow2 feature(s): %s", strings.Join(names, ", "))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
