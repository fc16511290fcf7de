package qcow2

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// maxFuzzInput caps the images the fuzzer tries.
const maxFuzzInput = 1 << 20

// FuzzOpenQcow2 opens arbitrary bytes as a qcow2 image, read-only through
// the graph, and reads and maps a few ranges: an error is fine, a panic or
// a large allocation is not. The image is passed as an fdset and the
// registry refuses plain paths, so a backing file name in the image opens
// nothing on the host.
func FuzzOpenQcow2(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(fuzzOpen)
}

// fuzzOpen is one run of FuzzOpenQcow2. Each run touches the file
// system, so minimizing an interesting input takes long: run the fuzzer
// with -fuzzminimizetime=200x to spend the time fuzzing.
func fuzzOpen(t *testing.T, data []byte) {
	if len(data) > maxFuzzInput {
		return
	}
	fdtest.Check(t)
	path := filepath.Join(t.TempDir(), "fuzz.qcow2")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	reg := qemuopen.New(qemuopen.Config{FdsetOnly: true})
	g := block.NewGraph(reg)
	defer func() {
		g.Close()
		reg.CloseAll()
	}()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	set := int64(1)
	if _, _, err := reg.AddFd(fd, qemuopen.AddRequest{SetID: &set}); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	n, err := openQcow2(g, "/dev/fdset/1", block.Options{"l2-cache-size": int64(1 << 20)})
	if err == nil {
		exercise(n)
		g.Delete(n.Name())
	}
	// Once more with the image as its own external data file: a header
	// that names a data file (an fdset-only registry opens no name the
	// image gives) is read through the data file path too.
	if n, err := openQcow2(g, "/dev/fdset/1", block.Options{"l2-cache-size": int64(1 << 20),
		"data-file": block.Options{"driver": "file", "filename": "/dev/fdset/1"}}); err == nil {
		exercise(n)
	}
	runtime.ReadMemStats(&after)
	// Cluster 0 (2 MiB at most), an L1 table no larger than the file,
	// 1 MiB of L2 cache, decompression buffers, snapshot entries.
	if a := after.TotalAlloc - before.TotalAlloc; a > 64<<20 {
		t.Fatalf("allocated %d MiB for a %d-byte image", a>>20, len(data))
	}
}

// exercise reads and maps a few ranges of n; errors are expected.
func exercise(n *block.Node) {
	size := n.Length()
	buf := make([]byte, 64<<10)
	for _, off := range []int64{0, size / 3, size / 2, size - 4096, size - 1} {
		if off < 0 {
			continue
		}
		m := min(int64(len(buf)), size-off)
		n.ReadAt(buf[:m], off)
	}
	off := int64(0)
	for i := 0; i < 64 && off < size; i++ {
		_, l, err := n.BlockStatus(off, size-off)
		if err != nil || l <= 0 {
			break
		}
		off += l
	}
	n.Info()
}

// fuzzSeeds are small valid images of several shapes.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	a := newTestImage(9, 1<<20)
	a.setL2(0, uint64(a.dataCluster(0x11))|flagCopied)
	a.setL2(1, flagZero)
	seeds = append(seeds, a.bytes())

	b := newTestImage(14, 1<<20)
	b.h.IncompatibleFeatures |= incompatExtL2
	b.setL2(0, uint64(b.dataCluster(0x22))|flagCopied, 0xf|0xf0<<32)
	seeds = append(seeds, b.bytes())

	c := newTestImage(12, 1<<20)
	host := c.dataCluster(0)
	c.put(host, []byte{0x4b, 0x4c, 0x44, 0x04, 0x00}) // a deflate stream of zeroes, roughly
	c.setL2(0, flagCompressed|uint64(host))
	c.bname = "base.raw"
	c.exts = []extension{{Type: extBackingFormat, Data: []byte("raw")}, featureTable(feature{0, 5, "x"})}
	c.h.NbSnapshots, c.h.SnapshotsOffset = 1, uint64(5*c.cs())
	seeds = append(seeds, c.bytes())

	d := newTestImage(16, 1<<30)
	d.h.Version, d.h.HeaderLength = 2, v2HeaderLen
	seeds = append(seeds, d.bytes())

	// An external data file (named in the header extension, raw): guest
	// cluster 0 at host offset 0 (COPIED), a zero-alloc cluster, and a
	// compressed entry, which such an image cannot have.
	e := newTestImage(12, 1<<20)
	e.h.IncompatibleFeatures |= incompatDataFile
	e.h.AutoclearFeatures |= autoclearDataFileRaw
	e.exts = []extension{{Type: extDataFile, Data: []byte("data.raw")}}
	e.setL2(0, flagCopied)
	e.setL2(1, uint64(1<<12)|flagCopied|flagZero)
	e.setL2(2, uint64(5<<12)|flagCopied) // host != guest: corrupt
	e.setL2(3, flagCompressed|uint64(6<<12))
	seeds = append(seeds, e.bytes())
	return seeds
}
