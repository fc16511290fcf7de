package qcow2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"minivmm/block"
	"minivmm/internal/fdtest"
)

// needQemu skips a test without qemu-img and qemu-io, except in CI, where
// their absence is a failure.
func needQemu(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (CI=true)", tool)
			}
			t.Skip("qemu-img not installed; apt-get install qemu-utils")
		}
	}
}

// run runs a QEMU tool in dir and fails the test if it fails or says a
// command failed.
func run(t testing.TB, dir, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("failed")) {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// qemuIO runs qemu-io commands on a qcow2 image.
func qemuIO(t testing.TB, img string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	run(t, filepath.Dir(img), "qemu-io", append(args, img)...)
}

// qemuRaw is what QEMU reads from an image (qemu-img convert -O raw); img
// may be a json: filename.
func qemuRaw(t testing.TB, dir, img string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "converted.raw")
	run(t, dir, "qemu-img", "convert", "-O", "raw", img, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// compareReads checks the node reads as want: whole, in 4 KiB and 1 MiB
// requests, and in requests of odd sizes at odd offsets (up to 300 KiB).
func compareReads(t *testing.T, n *block.Node, want []byte) {
	t.Helper()
	compareReadsN(t, n, want, 200)
}

// compareReadsN is compareReads with a number of random reads; with few,
// it skips the 1 MiB requests too (for slow images: compressed ones).
func compareReadsN(t *testing.T, n *block.Node, want []byte, random int) {
	t.Helper()
	if n.Length() != int64(len(want)) {
		t.Fatalf("length %d, QEMU's %d", n.Length(), len(want))
	}
	if got := readAll(t, n); !bytes.Equal(got, want) {
		t.Fatalf("whole read differs from QEMU's at byte %d", firstDiff(got, want))
	}
	sizes := []int{4096, 1 << 20}
	if random < 100 {
		sizes = sizes[:1]
	}
	for _, size := range sizes {
		buf := make([]byte, size)
		for off := 0; off < len(want); off += size {
			b := buf[:min(size, len(want)-off)]
			if _, err := n.ReadAt(b, int64(off)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, want[off:off+len(b)]) {
				t.Fatalf("%d-byte read at %d differs from QEMU's at byte %d", len(b), off, off+firstDiff(b, want[off:]))
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range random {
		off := r.IntN(len(want))
		b := make([]byte, 1+r.IntN(min(len(want)-off, 300<<10)))
		if _, err := n.ReadAt(b, int64(off)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want[off:off+len(b)]) {
			t.Fatalf("%d-byte read at %d differs from QEMU's at byte %d", len(b), off, off+firstDiff(b, want[off:]))
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// mapRange is one range of qemu-img map's JSON, or of ours.
type mapRange struct {
	Start  int64  `json:"start"`
	Length int64  `json:"length"`
	Depth  int    `json:"depth"`
	Zero   bool   `json:"zero"`
	Data   bool   `json:"data"`
	Offset *int64 `json:"offset"`
}

func qemuMap(t *testing.T, dir, img string) []mapRange {
	t.Helper()
	var m []mapRange
	if err := json.Unmarshal(run(t, dir, "qemu-img", "map", "--output=json", img), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func ourMap(t *testing.T, n *block.Node) []mapRange {
	t.Helper()
	var m []mapRange
	for off := int64(0); off < n.Length(); {
		st, l, err := n.BlockStatus(off, n.Length()-off)
		if err != nil || l <= 0 {
			t.Fatalf("block status at %d: %v (%d bytes)", off, err, l)
		}
		r := mapRange{Start: off, Length: l, Depth: st.Depth, Zero: st.Zero, Data: st.Data}
		if st.Offset >= 0 {
			o := st.Offset
			r.Offset = &o
		}
		m = append(m, r)
		off += l
	}
	return m
}

// merged joins neighbours equal in data, zero and depth.
func merged(m []mapRange) []mapRange {
	var out []mapRange
	for _, r := range m {
		if k := len(out) - 1; k >= 0 && out[k].Data == r.Data && out[k].Zero == r.Zero && out[k].Depth == r.Depth {
			out[k].Length += r.Length
			continue
		}
		r.Offset = nil
		out = append(out, r)
	}
	return out
}

// compareMaps checks our block status against qemu-img map: data, zero
// and depth everywhere, and every host offset we report.
func compareMaps(t *testing.T, n *block.Node, dir, img string) {
	t.Helper()
	theirs, ours := qemuMap(t, dir, img), ourMap(t, n)
	if a, b := merged(theirs), merged(ours); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("block status differs from qemu-img map:\nqemu: %v\nours: %v", a, b)
	}
	// Offsets: wherever we give one, QEMU gives the same.
	for _, r := range ours {
		if r.Offset == nil {
			continue
		}
		for _, q := range theirs {
			if q.Start <= r.Start && r.Start < q.Start+q.Length {
				if q.Offset == nil || *q.Offset+(r.Start-q.Start) != *r.Offset {
					t.Errorf("offset at %d: ours %d, QEMU's %v", r.Start, *r.Offset, q.Offset)
				}
				break
			}
		}
	}
}

// openAndCompare opens img read-only through the graph and checks reads
// and (unless noMap) block status against QEMU's.
func openAndCompare(t *testing.T, img string, extra block.Options, qemuName string, noMap bool) *block.Node {
	t.Helper()
	g := parallelFixture(t) // the caller checks fds (fdtest.Check)
	n, err := openQcow2(g, img, extra)
	if err != nil {
		t.Fatal(err)
	}
	if qemuName == "" {
		qemuName = img
	}
	compareReads(t, n, qemuRaw(t, filepath.Dir(img), qemuName))
	if !noMap {
		compareMaps(t, n, filepath.Dir(img), qemuName)
	}
	return n
}

// writes are qemu-io commands that leave every kind of cluster behind,
// scaled to the image: data at odd offsets and lengths, zero writes
// (with and without unmap), a discard, and the last bytes of the image.
func writes(size int64) []string {
	k := func(n int64) string { return fmt.Sprint(n) }
	return []string{
		"write -P 0x11 0 " + k(size/8),
		"write -P 0x22 " + k(size/8+1000) + " " + k(size/16+333),
		"write -P 0x33 " + k(size/2) + " " + k(3000),
		"write -z " + k(size/2+size/32) + " " + k(size/16),
		"write -P 0x44 " + k(size*3/4) + " " + k(size/8),
		"write -z -u " + k(size*3/4+size/64) + " " + k(size/32),
		"discard " + k(size/4) + " " + k(size/8),
		"write -P 0x55 " + k(size-4096) + " 4096",
	}
}

// TestInteropMatrix: images qemu-img creates across cluster sizes,
// versions, refcount widths and extended L2, written by qemu-io, read
// byte for byte as QEMU reads them, with the same block status.
func TestInteropMatrix(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	for _, tc := range []struct {
		name string
		opts string
		size int64
	}{
		{"cluster 512", "cluster_size=512", 4 << 20},
		{"cluster 4k", "cluster_size=4k", 4 << 20},
		{"cluster 64k", "cluster_size=64k", 16 << 20},
		{"cluster 2M", "cluster_size=2M", 64 << 20},
		{"compat 0.10", "compat=0.10", 16 << 20},
		{"compat 0.10 cluster 4k", "compat=0.10,cluster_size=4k", 4 << 20},
		{"refcount_bits 1", "refcount_bits=1", 16 << 20},
		{"refcount_bits 64", "refcount_bits=64,cluster_size=4k", 4 << 20},
		{"extended_l2 16k", "extended_l2=on,cluster_size=16k", 8 << 20},
		{"extended_l2 64k", "extended_l2=on,cluster_size=64k", 16 << 20},
		{"preallocation=metadata", "preallocation=metadata", 8 << 20},
		{"preallocation=metadata extended_l2", "preallocation=metadata,extended_l2=on", 8 << 20},
		{"lazy_refcounts", "lazy_refcounts=on", 4 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			img := filepath.Join(t.TempDir(), "img.qcow2")
			run(t, "", "qemu-img", "create", "-q", "-f", "qcow2", "-o", tc.opts, img, fmt.Sprint(tc.size))
			qemuIO(t, img, writes(tc.size)...)
			openAndCompare(t, img, nil, "", false)
		})
	}
}

// TestInteropSnapshots: internal snapshots (qemu-img snapshot -c) are
// read from the snapshot table; the active layer reads as QEMU reads it.
func TestInteropSnapshots(t *testing.T) {
	needQemu(t)
	img := filepath.Join(t.TempDir(), "snap.qcow2")
	run(t, "", "qemu-img", "create", "-q", "-f", "qcow2", img, "8M")
	qemuIO(t, img, "write -P 0x61 0 1M")
	run(t, "", "qemu-img", "snapshot", "-c", "first", img)
	qemuIO(t, img, "write -P 0x62 512k 1M")
	run(t, "", "qemu-img", "snapshot", "-c", "a-second-snapshot-with-a-long-name", img)
	qemuIO(t, img, "write -z 0 64k")
	g := fixture(t)
	n, q, err := openCapture(g, img, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(q.snapshots) != 2 || q.snapshots[0].Name != "first" || q.snapshots[1].Name != "a-second-snapshot-with-a-long-name" ||
		q.snapshots[0].ID != "1" || q.snapshots[1].L1Size == 0 || q.snapshots[0].ExtraSize < 16 {
		t.Errorf("snapshots %+v", q.snapshots)
	}
	compareReads(t, n, qemuRaw(t, "", img))
	compareMaps(t, n, "", img)
}

// TestInteropDirty: an image left dirty (lazy refcounts, qemu-io aborted
// before closing) opens read-only, says so, and reads as QEMU reads it.
func TestInteropDirty(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	img := filepath.Join(t.TempDir(), "dirty.qcow2")
	run(t, "", "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", img, "4M")
	cmd := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x66 0 1M", "-c", "abort", img)
	cmd.Run() // abort kills it
	n := openAndCompare(t, img, nil, "", true)
	if d := n.Info().DirtyFlag; d == nil || !*d {
		t.Errorf("dirty flag %v; want true", d)
	}
}

// compressible is n bytes of pseudo-random text (about 2:1 compressible,
// so that compressed clusters span several sectors), with zeroes from 2
// to 4 MiB (to be unallocated) and a run of a constant from 1 MiB.
func compressible(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = "abcdefghijklmnop"[r.IntN(16)]
	}
	clear(b[2<<20 : 4<<20])
	for i := 1 << 20; i < 1<<20+100000; i++ {
		b[i] = 0x5a
	}
	return b
}

// TestInteropCompressed: qemu-img convert -c with zlib and zstd, at
// several cluster sizes (2 MiB: compressed data spanning host clusters),
// and compressed clusters written by qemu-io over a backing file.
func TestInteropCompressed(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	for _, ctype := range []string{"zlib", "zstd"} {
		for _, cs := range []string{"512", "4k", "64k", "2M"} {
			t.Run(ctype+" "+cs, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				src := filepath.Join(dir, "src.raw")
				if err := os.WriteFile(src, compressible(4<<20+3*512, 1), 0o600); err != nil {
					t.Fatal(err)
				}
				img := filepath.Join(dir, "c.qcow2")
				run(t, dir, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type="+ctype+",cluster_size="+cs, src, img)
				n, q, err := openCapture(parallelFixture(t), img, nil)
				if err != nil {
					t.Fatal(err)
				}
				if want := map[string]uint8{"zlib": 0, "zstd": 1}[ctype]; q.hdr.CompressionType != want {
					t.Fatalf("compression type %d", q.hdr.CompressionType)
				}
				compareReadsN(t, n, qemuRaw(t, dir, img), 20)
				compareMaps(t, n, dir, img)
				// Overwrite part of it uncompressed, and write compressed
				// clusters with qemu-io where it is unallocated.
				qemuIO(t, img, "write -P 0x77 1000 5000", "write -c -P 0x78 2M 2M")
				n, err = openQcow2(parallelFixture(t), img, nil)
				if err != nil {
					t.Fatal(err)
				}
				compareReadsN(t, n, qemuRaw(t, dir, img), 20)
				compareMaps(t, n, dir, img)
			})
		}
	}
}

// TestInteropChain: raw <- qcow2 <- qcow2, each larger than the one
// below, with relative backing names; also opened with "backing": null,
// with the backing given as a node, and without a backing format (probed).
func TestInteropChain(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	dir := t.TempDir()
	base, mid, top := filepath.Join(dir, "base.raw"), filepath.Join(dir, "mid.qcow2"), filepath.Join(dir, "top.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "raw", "base.raw", "1M")
	run(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0xb1 0 300k", "-c", "write -P 0xb2 700k 100k", "base.raw")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b", "base.raw", "-F", "raw", "mid.qcow2", "3M")
	qemuIO(t, mid, "write -P 0xc1 100k 50k", "write -z 200k 20k", "write -P 0xc2 1500k 10k", "discard 0 8k")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2", "5M")
	qemuIO(t, top, "write -P 0xd1 120k 4k", "write -z 250k 64k", "write -P 0xd2 4M 64k", "write -z 710k 1k")

	t.Run("chain", func(t *testing.T) {
		t.Parallel()
		n := openAndCompare(t, top, nil, "", false)
		mid := n.Child("backing")
		if mid == nil || mid.Driver() != "qcow2" || !mid.ReadOnly() || mid.Child("backing") == nil || mid.Child("backing").Driver() != "raw" {
			t.Fatalf("backing chain not opened as its headers say")
		}
		if f := mid.Child("backing").Child("file").Filename(); f != base {
			t.Errorf("base opened as %q, want %q", f, base)
		}
	})
	t.Run("backing null", func(t *testing.T) {
		t.Parallel()
		openAndCompare(t, top, block.Options{"backing": nil},
			fmt.Sprintf(`json:{"driver":"qcow2","file":{"driver":"file","filename":%q},"backing":null}`, top), true)
	})
	t.Run("backing node", func(t *testing.T) {
		t.Parallel()
		g := parallelFixture(t)
		if _, err := g.Add(block.Options{"driver": "raw", "node-name": "b", "read-only": true,
			"file": block.Options{"driver": "file", "filename": base}}); err != nil {
			t.Fatal(err)
		}
		n, err := openQcow2(g, top, block.Options{"backing": "b"})
		if err != nil {
			t.Fatal(err)
		}
		want := qemuRaw(t, dir, fmt.Sprintf(`json:{"driver":"qcow2","file":{"driver":"file","filename":%q},`+
			`"backing":{"driver":"raw","file":{"driver":"file","filename":%q}}}`, top, base))
		compareReads(t, n, want)
	})
	t.Run("no backing format: not probed into qcow2", func(t *testing.T) {
		t.Parallel()
		b, err := os.ReadFile(top)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b[:4096], binary.BigEndian.AppendUint32(nil, extBackingFormat))
		if i < 0 {
			t.Fatal("no backing format extension")
		}
		binary.BigEndian.PutUint32(b[i:], 0x0badf00d) // now an unknown extension
		noFmt := filepath.Join(dir, "nofmt.qcow2")
		if err := os.WriteFile(noFmt, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = openQcow2(parallelFixture(t), noFmt, nil)
		if err == nil || !strings.Contains(err.Error(), "does not take a probed qcow2") {
			t.Errorf("qcow2 backing without a recorded format: %v", err)
		}
	})
}

// TestInteropExtL2Backing: subclusters of one cluster mixing data, zero
// and unallocated over a backing file; and a larger overlay over a shorter
// backing file.
func TestInteropExtL2Backing(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	dir := t.TempDir()
	run(t, dir, "qemu-img", "create", "-q", "-f", "raw", "base.raw", "3M")
	run(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0xbb 0 3M", "base.raw")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k", "-b", "base.raw", "-F", "raw", "ext.qcow2", "4M")
	img := filepath.Join(dir, "ext.qcow2")
	qemuIO(t, img, "write -P 0x11 0 2k", "write -z 4k 2k", "write -P 0x12 10k 6k", "write -z -u 40k 4k",
		"write -P 0x13 62k 4k", "write -P 0x14 3070k 4k", "discard 128k 64k")
	openAndCompare(t, img, nil, "", false)
}

// TestInteropQemuAgrees: QEMU refuses our hostile headers with the
// messages we use.
func TestInteropQemuAgrees(t *testing.T) {
	needQemu(t)
	for _, tc := range []struct {
		mutate func(*testImage)
		want   string
	}{
		{func(i *testImage) { i.h.ClusterBits = 22 }, "Unsupported cluster size: 2^22"},
		{func(i *testImage) { i.h.HeaderLength = 100 }, "qcow2 header too short"},
		{func(i *testImage) { i.h.RefcountOrder = 7 }, "Reference count entry width too large; may not exceed 64 bits"},
		{func(i *testImage) { i.h.L1Size = 1 << 30 }, "Active L1 table too large"},
		{func(i *testImage) { i.h.L1TableOffset += 8 }, "Active L1 table offset invalid"},
		{func(i *testImage) { i.h.RefcountTableClusters = 0 }, "Image does not contain a reference count table"},
		{func(i *testImage) { i.h.NbSnapshots = maxSnapshots + 1 }, "Snapshot table too large"},
		{func(i *testImage) { i.h.Size = 1 << 40 }, "L1 table is too small"},
		{func(i *testImage) { i.bname = strings.Repeat("b", 1024) }, "Backing file name too long"},
		{func(i *testImage) {
			i.h.IncompatibleFeatures |= 1 << 5
			i.exts = append(i.exts, featureTable(feature{0, 5, "time travel"}))
		}, "Unsupported qcow2 feature(s): time travel"},
		{func(i *testImage) { i.h.IncompatibleFeatures |= 1 << 9 }, "Unsupported qcow2 feature(s): Unknown incompatible feature: 200"},
		{func(i *testImage) { i.h.CompressionType = 1 }, "qcow2: Compression type incompatible feature bit must be set"},
		{func(i *testImage) {
			i.exts = append(i.exts, extension{Type: extBackingFormat, Data: []byte("0123456789abcdef")})
		}, "ERROR: ext_backing_format: len=16 too large (>=16)"},
	} {
		img := newTestImage(16, 1<<20)
		tc.mutate(img)
		path := img.write(t)
		out, err := exec.Command("qemu-img", "info", path).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("qemu-img info: %v %s; want %q", err, out, tc.want)
		}
	}
}
