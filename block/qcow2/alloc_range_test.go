package qcow2

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
)

// allocKinds are images whose clusters the range allocation treats
// differently: data from a backing file (raw, and with extended L2),
// compressed clusters, clusters shared with an internal snapshot, zero
// clusters, version 2, and unallocated ones.
var allocKinds = []struct {
	name, opts string
	backing    bool     // a raw backing file of 0x99, longer than the image
	compress   bool     // made by qemu-img convert -c
	cmds       []string // qemu-io on the image
	snapshot   bool     // an internal snapshot taken after cmds
}{
	{name: "plain", opts: "cluster_size=4096", cmds: []string{"write -P 1 0 64k", "write -z 128k 64k", "write -P 2 300k 5k"}},
	{name: "backing", opts: "cluster_size=4096", backing: true, cmds: []string{"write -P 1 8k 8k", "write -z 64k 64k"}},
	{name: "backing extended L2", opts: "cluster_size=65536,extended_l2=on", backing: true, cmds: []string{"write -P 1 3k 5k", "write -z 200k 6k"}},
	{name: "compressed", opts: "cluster_size=4096", compress: true},
	{name: "snapshot", opts: "cluster_size=4096", snapshot: true, cmds: []string{"write -P 3 0 256k", "write -z 256k 16k"}},
	{name: "snapshot extended L2", opts: "cluster_size=16384,extended_l2=on", snapshot: true, cmds: []string{"write -P 3 0 256k", "write -P 4 300k 3k"}},
	{name: "v2", opts: "cluster_size=512,compat=0.10", cmds: []string{"write -P 5 1000 3000", "write -z 8k 4k"}},
}

// allocImage makes kind k's image (512 KiB) with QEMU in dir.
func allocImage(t *testing.T, dir string, i int) string {
	k := allocKinds[i]
	img := filepath.Join(dir, "a.qcow2")
	args := []string{"create", "-q", "-f", "qcow2", "-o", k.opts}
	if k.backing {
		if err := os.WriteFile(filepath.Join(dir, "b.raw"), bytes.Repeat([]byte{0x99}, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-b", "b.raw", "-F", "raw")
	}
	if k.compress {
		src := filepath.Join(dir, "src.raw")
		if err := os.WriteFile(src, plCompressible(512<<10), 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, dir, "qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", k.opts, src, img)
	} else {
		run(t, dir, "qemu-img", append(args, img, "512k")...)
	}
	if len(k.cmds) > 0 {
		qemuIO(t, img, k.cmds...)
	}
	if k.snapshot {
		run(t, dir, "qemu-img", "snapshot", "-c", "s", img)
	}
	return img
}

// openAllocRW opens img read-write with a writer attached.
func openAllocRW(t *testing.T, g *block.Graph, img string) (*block.Node, *image, func()) {
	t.Helper()
	o := qcow2Options(img)
	o["read-only"] = false
	n, qi, err := openCaptureOpts(g, o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	return n, qi, func() {
		g.Detach(b)
		if err := g.Delete(n.Name()); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshotRaw is what QEMU reads of snapshot s of img.
func snapshotRaw(t *testing.T, dir, img string) []byte {
	out := filepath.Join(t.TempDir(), "s.raw")
	run(t, dir, "qemu-img", "convert", "-U", "-l", "snapshot.name=s", "-O", "raw", img, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPreallocateKeepsContent: preallocating (every mode) a range of
// every kind of image, whole or unaligned, allocates a host cluster for
// each of its clusters and changes nothing the guest or a snapshot reads;
// QEMU checks the image clean.
func TestPreallocateKeepsContent(t *testing.T) {
	needQemu(t)
	g := fixture(t)
	for i, k := range allocKinds {
		for _, mode := range []block.Prealloc{block.PreallocMetadata, block.PreallocFalloc, block.PreallocFull} {
			for _, r := range [][2]int64{{0, 512 << 10}, {3000, 300<<10 + 777}} {
				dir := t.TempDir()
				img := allocImage(t, dir, i)
				var snap []byte
				if k.snapshot {
					snap = snapshotRaw(t, dir, img)
				}
				n, qi, done := openAllocRW(t, g, img)
				want := readAll(t, n)
				if err := n.Preallocate(r[0], r[1], mode); err != nil {
					t.Fatalf("%s mode %d %v: %v", k.name, mode, r, err)
				}
				if got := readAll(t, n); !bytes.Equal(got, want) {
					t.Errorf("%s mode %d %v: reads differently after", k.name, mode, r)
				}
				for c := r[0] / qi.clusterSize; c <= (r[0]+r[1]-1)/qi.clusterSize; c++ {
					_, e, _, _, err := qi.l2Entry(c)
					if err != nil || e&offsetMask == 0 || e&flagCompressed != 0 {
						t.Errorf("%s mode %d %v: cluster %d not preallocated: %#x %v", k.name, mode, r, c, e, err)
						break
					}
				}
				done()
				run(t, dir, "qemu-img", "check", img)
				if got := qemuRaw(t, dir, img); !bytes.Equal(got, want) {
					t.Errorf("%s mode %d %v: QEMU reads differently", k.name, mode, r)
				}
				if k.snapshot && !bytes.Equal(snapshotRaw(t, dir, img), snap) {
					t.Errorf("%s mode %d %v: the snapshot changed", k.name, mode, r)
				}
			}
		}
	}
}

// TestCopyRangeToKinds: CopyRangeTo into every kind of image, unaligned,
// reads back the copied bytes and what was around them, leaves snapshots
// alone and QEMU's check clean.
func TestCopyRangeToKinds(t *testing.T) {
	needQemu(t)
	g := fixture(t)
	for i, k := range allocKinds {
		for _, r := range [][2]int64{{0, 512 << 10}, {3000, 300<<10 + 777}, {100 << 10, 1}} {
			dir := t.TempDir()
			img := allocImage(t, dir, i)
			var snap []byte
			if k.snapshot {
				snap = snapshotRaw(t, dir, img)
			}
			src := make([]byte, r[1])
			for j := range src {
				src[j] = byte(j*7/512 + 1)
			}
			sf, err := os.Create(filepath.Join(dir, "src"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sf.Write(src); err != nil {
				t.Fatal(err)
			}
			n, _, done := openAllocRW(t, g, img)
			want := readAll(t, n)
			copy(want[r[0]:], src)
			err = n.CopyRangeTo(r[0], r[1], func(fd int, off, pos, l int64) error {
				for l > 0 {
					so := pos
					k, err := unix.CopyFileRange(int(sf.Fd()), &so, fd, &off, int(l), 0)
					if err != nil {
						return err
					}
					pos, l = pos+int64(k), l-int64(k)
				}
				return nil
			})
			sf.Close()
			if err != nil {
				t.Fatalf("%s %v: %v", k.name, r, err)
			}
			if got := readAll(t, n); !bytes.Equal(got, want) {
				t.Errorf("%s %v: reads differently", k.name, r)
			}
			done()
			run(t, dir, "qemu-img", "check", img)
			if got := qemuRaw(t, dir, img); !bytes.Equal(got, want) {
				t.Errorf("%s %v: QEMU reads differently", k.name, r)
			}
			if k.snapshot && !bytes.Equal(snapshotRaw(t, dir, img), snap) {
				t.Errorf("%s %v: the snapshot changed", k.name, r)
			}
		}
	}
}

// TestPreallocateReusedCluster: a freed cluster the allocation reuses
// may still hold old bytes; metadata preallocation over a range that
// reads as zeroes makes it read as zeroes.
func TestPreallocateReusedCluster(t *testing.T) {
	needQemu(t)
	g := fixture(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "a.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "1M")
	qemuIO(t, img, "write -P 0x33 0 256k", "discard 0 128k")
	n, qi, done := openAllocRW(t, g, img)
	defer func() {
		if done != nil {
			done()
		}
	}()
	// Garbage in every free cluster below the end of the file.
	if _, err := n.WriteAt([]byte{1}, 500<<10); err != nil { // readies the refcounts
		t.Fatal(err)
	}
	cs := qi.clusterSize
	var free int
	for k := int64(1); k < qi.file.Length()/cs; k++ {
		if v, err := qi.rc.get(k); err != nil {
			t.Fatal(err)
		} else if v == 0 {
			if _, err := qi.file.WriteAt(bytes.Repeat([]byte{0x77}, int(cs)), k*cs); err != nil {
				t.Fatal(err)
			}
			free++
		}
	}
	if free < 8 {
		t.Fatalf("only %d free clusters to reuse", free)
	}
	if err := n.Preallocate(600<<10, 200<<10, block.PreallocMetadata); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 200<<10)
	if _, err := n.ReadAt(got, 600<<10); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Error("a reused cluster reads its old bytes")
	}
	done()
	done = nil
	run(t, dir, "qemu-img", "check", img)
	qemuIO(t, img, "read -P 0 600k 200k")
}
