package qcow2

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
)

func featureTable(entries ...feature) extension {
	data := make([]byte, featureEntrySize*len(entries))
	for i, f := range entries {
		data[i*featureEntrySize] = f.Type
		data[i*featureEntrySize+1] = f.Bit
		copy(data[i*featureEntrySize+2:(i+1)*featureEntrySize], f.Name)
	}
	return extension{Type: extFeatureTable, Data: data}
}

// allocated runs f and returns how many bytes it allocated.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestHostileHeaders breaks one field at a time: each image must be
// refused with a message naming what is wrong (QEMU's where it has one),
// without a panic, and without allocating what the header claims.
func TestHostileHeaders(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name   string
		bits   uint32 // cluster bits (default 16)
		mutate func(*testImage)
		raw    func([]byte) []byte // applied to the encoded image
		want   string
	}{
		{name: "magic", raw: func(b []byte) []byte { b[3] = 0; return b }, want: "Image is not in qcow2 format"},
		{name: "version 1", mutate: func(i *testImage) { i.h.Version = 1 }, want: "Unsupported qcow2 version 1"},
		{name: "version 4", mutate: func(i *testImage) { i.h.Version = 4 }, want: "Unsupported qcow2 version 4"},
		{name: "cluster bits 8", mutate: func(i *testImage) { i.h.ClusterBits = 8 }, want: "Unsupported cluster size: 2^8"},
		{name: "cluster bits 22", mutate: func(i *testImage) { i.h.ClusterBits = 22 }, want: "Unsupported cluster size: 2^22"},
		{name: "cluster bits huge", mutate: func(i *testImage) { i.h.ClusterBits = math.MaxUint32 }, want: "Unsupported cluster size: 2^4294967295"},
		{name: "header_length short", mutate: func(i *testImage) { i.h.HeaderLength = 100 }, want: "qcow2 header too short"},
		{name: "header_length past cluster", bits: 9, mutate: func(i *testImage) { i.h.HeaderLength = 1024 }, want: "qcow2 header exceeds cluster size"},
		{name: "header_length huge", mutate: func(i *testImage) { i.h.HeaderLength = math.MaxUint32 }, want: "qcow2 header exceeds cluster size"},
		{name: "backing_file_offset", mutate: func(i *testImage) { i.h.BackingFileOffset = 1 << 17 }, want: "Invalid backing file offset"},
		{name: "compression_type unknown", mutate: func(i *testImage) { i.h.CompressionType = 2 }, want: "qcow2: unknown compression type: 2"},
		{name: "compression_type zstd without bit", mutate: func(i *testImage) { i.h.CompressionType = 1 },
			want: "qcow2: Compression type incompatible feature bit must be set"},
		{name: "compression bit with deflate", mutate: func(i *testImage) { i.h.IncompatibleFeatures |= incompatCompression },
			want: "qcow2: Compression type incompatible feature bit must not be set"},
		{name: "unknown feature named", mutate: func(i *testImage) {
			i.h.IncompatibleFeatures |= 1 << 5
			i.exts = append(i.exts, featureTable(feature{0, 0, "dirty bit"}, feature{0, 5, "time travel"}))
		}, want: "Unsupported qcow2 feature(s): time travel"},
		{name: "unknown feature unnamed", mutate: func(i *testImage) { i.h.IncompatibleFeatures |= 1 << 5 },
			want: "Unsupported qcow2 feature(s): Unknown incompatible feature: 20"},
		{name: "unknown features mixed", mutate: func(i *testImage) {
			i.h.IncompatibleFeatures |= 1<<6 | 1<<63
			i.exts = append(i.exts, featureTable(feature{1, 6, "not incompatible"}, feature{0, 6, "warp drive"}))
		}, want: "Unsupported qcow2 feature(s): warp drive, Unknown incompatible feature: 8000000000000000"},
		{name: "unknown feature with broken extensions", mutate: func(i *testImage) {
			i.h.IncompatibleFeatures |= 1 << 7
			i.exts = append(i.exts, extension{Type: 0x1234, Data: make([]byte, 16)})
		}, raw: func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[knownHeaderLen+4:], math.MaxUint32)
			return b
		}, want: "Unsupported qcow2 feature(s): Unknown incompatible feature: 80"},
		{name: "subcluster size", bits: 13, mutate: func(i *testImage) { i.h.IncompatibleFeatures |= incompatExtL2 },
			want: "Unsupported subcluster size: 256"},
		{name: "refcount_order", mutate: func(i *testImage) { i.h.RefcountOrder = 7 },
			want: "Reference count entry width too large; may not exceed 64 bits"},
		{name: "crypt_method AES", mutate: func(i *testImage) { i.h.CryptMethod = 1 }, want: "encrypted (AES, crypt_method 1)"},
		{name: "crypt_method LUKS", mutate: func(i *testImage) { i.h.CryptMethod = 2 }, want: "encrypted (LUKS, crypt_method 2)"},
		{name: "crypt_method unknown", mutate: func(i *testImage) { i.h.CryptMethod = 3 }, want: "Unsupported encryption method 3"},
		{name: "refcount_table_clusters 0", mutate: func(i *testImage) { i.h.RefcountTableClusters = 0 },
			want: "Image does not contain a reference count table"},
		{name: "refcount_table_clusters huge", mutate: func(i *testImage) { i.h.RefcountTableClusters = 129 },
			want: "Reference count table too large"},
		{name: "refcount_table_offset unaligned", mutate: func(i *testImage) { i.h.RefcountTableOffset += 512 },
			want: "Reference count table offset invalid"},
		{name: "refcount_table_offset overflow", mutate: func(i *testImage) { i.h.RefcountTableOffset = math.MaxInt64 &^ 0xffff },
			want: "Reference count table offset invalid"},
		{name: "nb_snapshots", mutate: func(i *testImage) { i.h.NbSnapshots = maxSnapshots + 1 }, want: "Snapshot table too large"},
		{name: "snapshots_offset unaligned", mutate: func(i *testImage) { i.h.SnapshotsOffset = 8 },
			want: "Snapshot table offset invalid"},
		{name: "snapshots_offset overflow", mutate: func(i *testImage) {
			i.h.NbSnapshots, i.h.SnapshotsOffset = maxSnapshots, math.MaxInt64&^0xffff
		}, want: "Snapshot table offset invalid"},
		{name: "l1_size huge", mutate: func(i *testImage) { i.h.L1Size = math.MaxUint32 }, want: "Active L1 table too large"},
		{name: "l1_size just too large", mutate: func(i *testImage) { i.h.L1Size = maxL1Bytes/8 + 1 }, want: "Active L1 table too large"},
		{name: "l1_table_offset unaligned", mutate: func(i *testImage) { i.h.L1TableOffset += 8 }, want: "Active L1 table offset invalid"},
		{name: "l1_table_offset overflow", mutate: func(i *testImage) { i.h.L1TableOffset, i.h.L1Size = math.MaxInt64&^0xffff, 1<<16 },
			want: "Active L1 table offset invalid"},
		{name: "size too big for any L1", bits: 9, mutate: func(i *testImage) { i.h.Size = 1 << 47 }, want: "Image is too big"},
		{name: "size beyond int64", mutate: func(i *testImage) { i.h.Size = math.MaxUint64 }, want: "Image size 18446744073709551615 exceeds"},
		{name: "l1_size too small", mutate: func(i *testImage) { i.h.Size = 1 << 40 }, want: "L1 table is too small"},
		{name: "backing name too long", mutate: func(i *testImage) { i.bname = strings.Repeat("b", 1024) },
			want: "Backing file name too long"},
		{name: "backing name past cluster 0", bits: 9, mutate: func(i *testImage) {
			i.bname = "base"
			i.h.BackingFileOffset, i.h.BackingFileSize = 508, 8
		}, want: "Backing file name too long"},
		{name: "backing format too long", mutate: func(i *testImage) {
			i.exts = append(i.exts, extension{Type: extBackingFormat, Data: []byte("0123456789abcdef")})
		}, want: "ERROR: ext_backing_format: len=16 too large (>=16)"},
		{name: "extension too large", mutate: func(i *testImage) {
			i.exts = append(i.exts, extension{Type: 0x1234, Data: make([]byte, 8)})
		}, raw: func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[knownHeaderLen+4:], 1<<16)
			return b
		}, want: "Header extension too large"},
		{name: "extension header cut off", mutate: func(i *testImage) {
			i.h.BackingFileOffset, i.bname = knownHeaderLen+4, "x"
		}, want: "Header extension too large"},
		{name: "crypto extension without LUKS", mutate: func(i *testImage) {
			i.exts = append(i.exts, extension{Type: extCrypto, Data: make([]byte, 16)})
		}, want: "CRYPTO header extension only expected with LUKS encryption method"},
		{name: "bitmaps extension length", mutate: func(i *testImage) {
			i.exts = append(i.exts, extension{Type: extBitmaps, Data: make([]byte, 16)})
		}, want: "bitmaps_ext: Invalid extension length"},
		{name: "bitmaps extension with zero bitmaps", mutate: func(i *testImage) {
			i.h.AutoclearFeatures |= autoclearBitmaps
			i.exts = append(i.exts, extension{Type: extBitmaps, Data: make([]byte, 24)})
		}, want: "found bitmaps extension with zero bitmaps"},
		{name: "external data file", mutate: func(i *testImage) {
			i.h.IncompatibleFeatures |= incompatDataFile
			i.exts = append(i.exts, extension{Type: extDataFile, Data: []byte("data.raw")})
		}, want: "Could not open 'data.raw': No such file or directory"},
		{name: "external data file unnamed", mutate: func(i *testImage) { i.h.IncompatibleFeatures |= incompatDataFile },
			want: "'data-file' is required for this image"},
		{name: "data-file-raw", mutate: func(i *testImage) { i.h.AutoclearFeatures |= autoclearDataFileRaw },
			want: "data-file-raw requires a data file"},
		{name: "snapshot extra data", mutate: func(i *testImage) {
			i.h.NbSnapshots, i.h.SnapshotsOffset = 1, uint64(5*i.cs())
			e := make([]byte, 40)
			binary.BigEndian.PutUint32(e[36:], 1025)
			i.put(5*i.cs(), e)
		}, want: "Too much extra metadata in snapshot table entry 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bits := tc.bits
			if bits == 0 {
				bits = 16
			}
			img := newTestImage(bits, 1<<20)
			if tc.mutate != nil {
				tc.mutate(img)
			}
			b := img.bytes()
			if tc.raw != nil {
				b = tc.raw(b)
			}
			path := writeTemp(t, "hostile.qcow2", b)
			g := fixture(t)
			var err error
			n := allocated(func() { _, err = openQcow2(g, path, nil) })
			if err == nil {
				t.Fatalf("opened; want error %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q; want it to contain %q", err, tc.want)
			}
			if n > 8<<20 {
				t.Errorf("allocated %d MiB to refuse it", n/mib)
			}
			if len(g.Nodes()) != 0 {
				t.Errorf("a failed open left %d nodes", len(g.Nodes()))
			}
		})
	}
}

// TestSnapshotTableTooBig: 64 MiB of snapshot table (in a sparse file) is
// where QEMU stops.
func TestSnapshotTableTooBig(t *testing.T) {
	img := newTestImage(16, 1<<20)
	start := 16 * img.cs()
	img.h.NbSnapshots, img.h.SnapshotsOffset = 1000, uint64(start)
	path := writeTemp(t, "snap.qcow2", img.bytes())
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(0)
	for i := 0; i < 1000 && off < maxSnapshotTable+(1<<20); i++ {
		e := make([]byte, 40)
		binary.BigEndian.PutUint16(e[12:], 0xffff)
		binary.BigEndian.PutUint16(e[14:], 0xffff)
		if _, err := f.WriteAt(e, start+off); err != nil {
			t.Fatal(err)
		}
		off = (off + 40 + 2*0xffff + 7) &^ 7
	}
	f.Close()
	g := fixture(t)
	_, err = openQcow2(g, path, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "Snapshot table is too big\nYou can force-remove all ") {
		t.Fatalf("error %v; want Snapshot table is too big, with the hint", err)
	}
}

// TestHeaderFields opens well-formed images of both versions and checks
// what is read from them.
func TestHeaderFields(t *testing.T) {
	t.Run("v2", func(t *testing.T) {
		img := newTestImage(16, 5<<20+512)
		img.h.Version, img.h.HeaderLength = 2, v2HeaderLen
		path := img.write(t)
		g := fixture(t)
		n, err := openQcow2(g, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n.Length() != 5<<20+512 {
			t.Errorf("length %d", n.Length())
		}
		info := n.Info()
		if info.DirtyFlag == nil || *info.DirtyFlag {
			t.Errorf("dirty flag %v", info.DirtyFlag)
		}
		if info.Filename != path {
			t.Errorf("filename %q, want %q", info.Filename, path)
		}
	})
	t.Run("v3 size rounds down to sectors, as QEMU's", func(t *testing.T) {
		img := newTestImage(12, 1<<20+100)
		path := img.write(t)
		g := fixture(t)
		n, err := openQcow2(g, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n.Length() != 1<<20 {
			t.Errorf("length %d", n.Length())
		}
	})
	t.Run("dirty and corrupt open read-only", func(t *testing.T) {
		img := newTestImage(16, 1<<20)
		img.h.IncompatibleFeatures = incompatDirty | incompatCorrupt
		path := img.write(t)
		g := fixture(t)
		n, err := openQcow2(g, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := n.Info().DirtyFlag; d == nil || !*d {
			t.Errorf("dirty flag %v", d)
		}
		_, err = openQcow2(g, path, block.Options{"read-only": false})
		if err == nil || err.Error() != "qcow2: Image is corrupt; cannot be opened read/write" {
			t.Errorf("read-write open of a corrupt image: %v", err)
		}
	})
	t.Run("auto-read-only becomes writable for a writer", func(t *testing.T) {
		path := newTestImage(16, 1<<20).write(t)
		g := fixture(t)
		n, err := openQcow2(g, path, block.Options{"read-only": false, "auto-read-only": true, "node-name": "disk"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.WriteAt(make([]byte, 512), 0); !errors.Is(err, unix.EPERM) {
			t.Errorf("write without a writer: %v", err)
		}
		b, err := g.Attach("", n, block.Perm{Write: true})
		if err != nil {
			t.Fatalf("attaching a writer: %v", err)
		}
		if _, err := n.WriteAt([]byte("hello"), 4096); err != nil {
			t.Errorf("write: %v", err)
		}
		got := make([]byte, 5)
		if _, err := n.ReadAt(got, 4096); err != nil || string(got) != "hello" {
			t.Errorf("read back %q, %v", got, err)
		}
		g.Detach(b)
	})
	t.Run("huge L1 past the end of the file", func(t *testing.T) {
		img := newTestImage(16, 1<<20)
		img.h.L1Size = maxL1Bytes / 8
		path := img.write(t)
		g := fixture(t)
		var err error
		var n *block.Node
		if a := allocated(func() { n, err = openQcow2(g, path, nil) }); a > 8<<20 {
			t.Errorf("allocated %d bytes", a)
		}
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, n)
	})
	t.Run("unknown header fields and extensions kept", func(t *testing.T) {
		img := newTestImage(16, 1<<20)
		img.h.HeaderLength = 128
		img.exts = []extension{{Type: 0xdeadbeef, Data: []byte("keep me")}, {Type: extBackingFormat, Data: []byte("raw")}}
		b := img.bytes()
		copy(b[knownHeaderLen:], "future!")
		path := writeTemp(t, "ext.qcow2", b)
		g := fixture(t)
		_, q, err := openCapture(g, path, block.Options{"backing": nil})
		if err != nil {
			t.Fatal(err)
		}
		if string(q.hdr.Tail[knownHeaderLen-compressionByte:][:7]) != "future!" || len(q.hdr.Tail) != 128-compressionByte {
			t.Errorf("tail %q", q.hdr.Tail)
		}
		if len(q.ext.All) != 2 || q.ext.All[0].Type != 0xdeadbeef || string(q.ext.All[0].Data) != "keep me" {
			t.Errorf("extensions %+v", q.ext.All)
		}
		if q.ext.BackingFormat != "raw" {
			t.Errorf("backing format %q", q.ext.BackingFormat)
		}
	})
}

func TestProbe(t *testing.T) {
	img := newTestImage(16, 1<<20).bytes()
	for _, tc := range []struct {
		b    []byte
		want int
	}{
		{img[:512], 100},
		{img[:72], 100},
		{img[:71], 0},
		{append([]byte("QFI\xfb\x00\x00\x00\x01"), make([]byte, 100)...), 0},
		{append([]byte("QFI\xfb\x00\x00\x00\x09"), make([]byte, 100)...), 100},
		{make([]byte, 512), 0},
	} {
		if got := probeHeader(tc.b, ""); got != tc.want {
			t.Errorf("probe of %q...: %d, want %d", tc.b[:8], got, tc.want)
		}
	}
	if got := block.Probe(img[:512], filepath.Join("x", "y")); got != "qcow2" {
		t.Errorf("block.Probe: %q", got)
	}
}
