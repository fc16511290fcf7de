package qcow2

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"minivmm/block"
	"minivmm/internal/fdtest"
)

// openRW opens path read-write (discard=unmap) with a writer attached.
func openRW(t testing.TB, g *block.Graph, path string) (*block.Node, *block.Backend) {
	t.Helper()
	n, err := openQcow2(g, path, block.Options{"read-only": false, "discard": "unmap"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	return n, b
}

// qemuCheck runs qemu-img check and fails on corruptions or, unless
// leaksOK, leaks.
func qemuCheck(t testing.TB, img string, leaksOK bool) {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", "-f", "qcow2", img).CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 3 && leaksOK {
			return
		}
		t.Fatalf("qemu-img check %s: %v\n%s", img, err, out)
	}
}

func qemuCompare(t testing.TB, img, raw string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, raw).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img compare: %v\n%s", err, out)
	}
}

// discardRule is how a discard shows in the guest's view.
type discardRule struct {
	keep  bool  // version 2 with a backing file: discard changes nothing
	grain int64 // whole units of this size (cluster or subcluster) read as zeroes
	align bool  // discard whole clusters only (compressed clusters keep partial discards)
}

// workload does random writes, zero writes and discards on n, mirrored
// into shadow (the guest's expected view).
func workload(t testing.TB, n *block.Node, shadow []byte, cs int64, ops int, seed uint64, dr discardRule) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	size := int64(len(shadow))
	for i := range ops {
		var off, l int64
		switch r.IntN(3) {
		case 0: // whole clusters
			off = r.Int64N(size/cs) * cs
			l = min(size-off, cs*(1+r.Int64N(4)))
		case 1: // small unaligned
			off = r.Int64N(size)
			l = min(size-off, 1+r.Int64N(3*cs/2))
		default:
			off = r.Int64N(size/512) * 512
			l = min(size-off, 512*(1+r.Int64N(64)))
		}
		switch k := r.IntN(10); {
		case k < 7:
			p := make([]byte, l)
			for j := range p {
				p[j] = byte(i + j/512 + 1)
			}
			if _, err := n.WriteAt(p, off); err != nil {
				t.Fatalf("op %d write %d+%d: %v", i, off, l, err)
			}
			copy(shadow[off:], p)
		case k < 9:
			if err := n.WriteZeroes(off, l, k == 8); err != nil {
				t.Fatalf("op %d write-zeroes %d+%d: %v", i, off, l, err)
			}
			clear(shadow[off : off+l])
		default:
			if dr.align {
				off &^= cs - 1
				l = min(size-off, (l+cs-1)&^(cs-1))
			}
			if err := n.Discard(off, l); err != nil {
				t.Fatalf("op %d discard %d+%d: %v", i, off, l, err)
			}
			if dr.keep {
				break
			}
			// whole units (and the image's last partial one) read as zeroes
			g := cmp.Or(dr.grain, cs)
			for c := off &^ (g - 1); c < off+l; c += g {
				if c >= off && (c+g <= off+l || off+l == size) {
					clear(shadow[c:min(c+g, size)])
				}
			}
		}
	}
}

type writeCase struct {
	name     string
	create   []string // qemu-img create -o options ("" none)
	size     int64
	cs       int64
	compress bool
	backing  bool
	extL2    bool
	// qemu: qemu-io writes into the image first (writes(size)), ending
	// with a write that allocates a fresh cluster at its start, so that
	// with subclusters the file ends inside that cluster; snapshot: and
	// qemu-img snapshot -c takes internal snapshots between them.
	qemu     bool
	snapshot bool
}

// qemuPrepare has QEMU write into img (tc.qemu, tc.snapshot) and returns
// the guest's view after it, as QEMU reads it.
func qemuPrepare(t *testing.T, dir, img string, tc writeCase) []byte {
	t.Helper()
	if tc.snapshot {
		qemuIO(t, img, "write -P 0x5a 0 "+itoa(tc.size/2))
		run(t, dir, "qemu-img", "snapshot", "-c", "before", img)
	}
	w := writes(tc.size)
	if tc.snapshot {
		run(t, dir, "qemu-img", "snapshot", "-c", "middle", img)
		w = w[:len(w)/2]
	}
	qemuIO(t, img, append(w, "write -P 0x66 "+itoa(qemuLastCluster(tc))+" 512")...)
	return qemuRaw(t, dir, img)
}

// qemuLastCluster is the guest offset of the cluster qemuPrepare
// allocates last.
func qemuLastCluster(tc writeCase) int64 { return tc.size/3&^(tc.cs-1) + 5*tc.cs }

func TestWriteInterop(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	cases := []writeCase{
		{name: "512-v3-16", create: []string{"cluster_size=512"}, size: 2 << 20, cs: 512},
		{name: "4k-v2", create: []string{"cluster_size=4096,compat=0.10"}, size: 8 << 20, cs: 4096},
		{name: "64k-v3", create: []string{"cluster_size=65536"}, size: 32 << 20, cs: 65536},
		{name: "4k-rc1", create: []string{"cluster_size=4096,refcount_bits=1"}, size: 8 << 20, cs: 4096},
		{name: "4k-rc64", create: []string{"cluster_size=4096,refcount_bits=64"}, size: 8 << 20, cs: 4096},
		{name: "512-rc1-v3", create: []string{"cluster_size=512,refcount_bits=1"}, size: 1 << 20, cs: 512},
		{name: "compressed", create: []string{"cluster_size=65536"}, size: 8 << 20, cs: 65536, compress: true},
		{name: "backing-v3", create: []string{"cluster_size=4096"}, size: 8 << 20, cs: 4096, backing: true},
		{name: "backing-v2", create: []string{"cluster_size=4096,compat=0.10"}, size: 8 << 20, cs: 4096, backing: true},
		{name: "ext-64k", create: []string{"cluster_size=65536,extended_l2=on"}, size: 32 << 20, cs: 65536, extL2: true},
		{name: "ext-64k-backing", create: []string{"cluster_size=65536,extended_l2=on"}, size: 32 << 20, cs: 65536, backing: true, extL2: true},
		{name: "ext-16k-rc1-backing", create: []string{"cluster_size=16384,extended_l2=on,refcount_bits=1"}, size: 8 << 20, cs: 16384, backing: true, extL2: true},
		{name: "ext-2M", create: []string{"cluster_size=2M,extended_l2=on"}, size: 32 << 20, cs: 2 << 20, extL2: true},
		{name: "ext-2M-backing", create: []string{"cluster_size=2M,extended_l2=on"}, size: 32 << 20, cs: 2 << 20, backing: true, extL2: true},
		{name: "ext-compressed", create: []string{"cluster_size=65536,extended_l2=on"}, size: 8 << 20, cs: 65536, compress: true, extL2: true},
		{name: "lazy-512", create: []string{"cluster_size=512,lazy_refcounts=on"}, size: 8 << 20, cs: 512},
		{name: "lazy-4k-rc1", create: []string{"cluster_size=4096,refcount_bits=1,lazy_refcounts=on"}, size: 8 << 20, cs: 4096},
		{name: "lazy-ext-64k-backing", create: []string{"cluster_size=65536,extended_l2=on,lazy_refcounts=on"}, size: 32 << 20, cs: 65536, backing: true, extL2: true},
		{name: "lazy-compressed", create: []string{"cluster_size=65536,lazy_refcounts=on"}, size: 8 << 20, cs: 65536, compress: true},
		// Images QEMU wrote before minivmm writes into them.
		{name: "qemu-v3-64k", create: []string{"cluster_size=65536"}, size: 16 << 20, cs: 65536, qemu: true},
		{name: "qemu-v2-4k", create: []string{"cluster_size=4096,compat=0.10"}, size: 8 << 20, cs: 4096, qemu: true},
		{name: "qemu-512", create: []string{"cluster_size=512"}, size: 2 << 20, cs: 512, qemu: true},
		{name: "qemu-2M", create: []string{"cluster_size=2M"}, size: 32 << 20, cs: 2 << 20, qemu: true},
		{name: "qemu-ext-64k", create: []string{"cluster_size=65536,extended_l2=on"}, size: 16 << 20, cs: 65536, extL2: true, qemu: true},
		{name: "qemu-ext-2M", create: []string{"cluster_size=2M,extended_l2=on"}, size: 32 << 20, cs: 2 << 20, extL2: true, qemu: true},
		{name: "qemu-ext-16k-backing", create: []string{"cluster_size=16384,extended_l2=on"}, size: 8 << 20, cs: 16384, extL2: true, backing: true, qemu: true},
		{name: "qemu-ext-lazy", create: []string{"cluster_size=65536,extended_l2=on,lazy_refcounts=on"}, size: 16 << 20, cs: 65536, extL2: true, qemu: true},
		{name: "qemu-backing-v2", create: []string{"cluster_size=4096,compat=0.10"}, size: 8 << 20, cs: 4096, backing: true, qemu: true},
		{name: "qemu-compressed", create: []string{"cluster_size=65536"}, size: 8 << 20, cs: 65536, compress: true, qemu: true},
		{name: "qemu-ext-compressed", create: []string{"cluster_size=65536,extended_l2=on"}, size: 8 << 20, cs: 65536, compress: true, extL2: true, qemu: true},
		{name: "qemu-snapshots", create: []string{"cluster_size=4096"}, size: 8 << 20, cs: 4096, qemu: true, snapshot: true},
		{name: "qemu-snapshots-ext", create: []string{"cluster_size=65536,extended_l2=on"}, size: 16 << 20, cs: 65536, extL2: true, qemu: true, snapshot: true},
		{name: "qemu-snapshots-v2", create: []string{"cluster_size=65536,compat=0.10"}, size: 16 << 20, cs: 65536, qemu: true, snapshot: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := filepath.Join(dir, "disk.qcow2")
			shadow := make([]byte, tc.size)
			switch {
			case tc.compress:
				copy(shadow, compressible(int(tc.size), 7))
				src := filepath.Join(dir, "src.raw")
				os.WriteFile(src, shadow, 0o600)
				run(t, dir, "qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", tc.create[0], src, img)
			case tc.backing:
				r := rand.New(rand.NewPCG(3, 3))
				base := make([]byte, tc.size*3/4) // shorter than the overlay
				for i := range base {
					base[i] = byte(r.Uint32())
				}
				copy(shadow, base)
				bp := filepath.Join(dir, "base.raw")
				os.WriteFile(bp, base, 0o600)
				run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", tc.create[0], "-b", bp, "-F", "raw", img, itoa(tc.size))
			default:
				run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", tc.create[0], img, itoa(tc.size))
			}
			if tc.qemu {
				shadow = qemuPrepare(t, dir, img, tc)
			}
			g := parallelFixture(t)
			n, b := openRW(t, g, img)
			if tc.qemu {
				// Before anything grows the file: into the cluster QEMU
				// allocated last, where (with subclusters) it ends.
				p := bytes.Repeat([]byte{0x67}, int(min(4096, tc.cs/2)))
				off := qemuLastCluster(tc) + tc.cs/2
				if _, err := n.WriteAt(p, off); err != nil {
					t.Fatalf("write %d+%d into QEMU's last cluster: %v", off, len(p), err)
				}
				copy(shadow[off:], p)
			}
			dr := discardRule{keep: tc.backing && strings.Contains(tc.create[0], "0.10")}
			if tc.extL2 {
				dr.grain = tc.cs / 32
				dr.align = tc.compress
			}
			workload(t, n, shadow, tc.cs, 400, uint64(len(tc.name)), dr)
			if !tc.backing && !tc.snapshot {
				// Shrink to a cluster boundary and grow back: the cut
				// part reads as zeroes, and writing goes on.
				cut := max(tc.cs, tc.size*2/3&^(tc.cs-1))
				if err := n.Truncate(cut); err != nil {
					t.Fatalf("shrink to %d: %v", cut, err)
				}
				if err := n.Truncate(tc.size); err != nil {
					t.Fatalf("grow back to %d: %v", tc.size, err)
				}
				clear(shadow[cut:])
				workload(t, n, shadow, tc.cs, 100, uint64(len(tc.name))+1, dr)
			}
			if err := n.Flush(); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, n); !bytes.Equal(got, shadow) {
				t.Fatalf("read back differs at %d", firstDiff(got, shadow))
			}
			g.Detach(b)
			if err := g.Delete(n.Name()); err != nil {
				t.Fatal(err)
			}
			raw := filepath.Join(dir, "shadow.raw")
			os.WriteFile(raw, shadow, 0o600)
			qemuCheck(t, img, false)
			qemuCompare(t, img, raw)
		})
	}
}

func itoa(n int64) string { return string(strconvAppend(nil, n)) }

func strconvAppend(b []byte, n int64) []byte {
	if n >= 10 {
		b = strconvAppend(b, n/10)
	}
	return append(b, byte('0'+n%10))
}

// TestWriteGrowth: 512-byte clusters and many MiB written force new
// refcount blocks and moves of the refcount table.
func TestWriteGrowth(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "grow.qcow2")
	const size = 24 << 20
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, itoa(size))
	before := headerU64(t, img, 48)
	g := fixture(t)
	n, b := openRW(t, g, img)
	shadow := make([]byte, size)
	p := make([]byte, 1<<20)
	for off := int64(0); off < size; off += 1 << 20 {
		for i := range p {
			p[i] = byte(off>>20) + byte(i>>9)
		}
		if _, err := n.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(shadow[off:], p)
	}
	if err := n.Truncate(size + 8<<20); err != nil {
		t.Fatal(err)
	}
	shadow = append(shadow, make([]byte, 8<<20)...)
	if _, err := n.WriteAt(p, size+4<<20); err != nil {
		t.Fatal(err)
	}
	copy(shadow[size+4<<20:], p)
	if got := readAll(t, n); !bytes.Equal(got, shadow) {
		t.Fatalf("read back differs at %d", firstDiff(got, shadow))
	}
	g.Detach(b)
	g.Delete(n.Name())
	if after := headerU64(t, img, 48); after == before {
		t.Errorf("the refcount table did not move (%#x)", after)
	}
	raw := filepath.Join(dir, "shadow.raw")
	os.WriteFile(raw, shadow, 0o600)
	qemuCheck(t, img, false)
	qemuCompare(t, img, raw)
}

func headerU64(t testing.TB, img string, off int) uint64 {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.Uint64(b[off:])
}

// TestWriteDirtyRepair: an image left dirty by a crash with lazy
// refcounts comes out check-clean after a read-write open.
func TestWriteDirtyRepair(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "dirty.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on,cluster_size=4096", img, "4M")
	exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x66 0 1M", "-c", "write -P 0x67 2M 100k", "-c", "abort", img).Run()
	if headerU64(t, img, 72)&incompatDirty == 0 {
		t.Fatal("qemu-io left the image clean")
	}
	g := fixture(t)
	n, b := openRW(t, g, img)
	if _, err := n.WriteAt(bytes.Repeat([]byte{0x68}, 8192), 3<<20); err != nil {
		t.Fatal(err)
	}
	g.Detach(b)
	g.Delete(n.Name())
	if headerU64(t, img, 72)&incompatDirty != 0 {
		t.Error("the dirty bit is still set")
	}
	qemuCheck(t, img, false)
	want := make([]byte, 4<<20)
	copy(want, bytes.Repeat([]byte{0x66}, 1<<20))
	copy(want[2<<20:], bytes.Repeat([]byte{0x67}, 100<<10))
	copy(want[3<<20:], bytes.Repeat([]byte{0x68}, 8192))
	raw := filepath.Join(dir, "want.raw")
	os.WriteFile(raw, want, 0o600)
	qemuCompare(t, img, raw)
}

// TestWriteLazyRefcounts: with lazy refcounts the first allocating write
// marks the image dirty and the refcounts stay in memory, also across a
// flush (as in QEMU); the last writer leaving writes them and marks the
// image clean, and a new writer marks it dirty again.
func TestWriteLazyRefcounts(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "lazy.qcow2")
	const size = 8 << 20
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on,cluster_size=4096", img, itoa(size))
	g := fixture(t)
	n, b := openRW(t, g, img)
	shadow := make([]byte, size)
	workload(t, n, shadow, 4096, 200, 7, discardRule{})
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	if headerU64(t, img, 72)&incompatDirty == 0 {
		t.Fatal("not marked dirty after allocating writes")
	}
	if out, err := exec.Command("qemu-img", "check", "-f", "qcow2", img).CombinedOutput(); err == nil {
		t.Fatalf("qemu-img check found the refcounts on disk up to date: they were written through\n%s", out)
	}
	g.Detach(b)
	if headerU64(t, img, 72)&incompatDirty != 0 {
		t.Fatal("still dirty after the last writer left")
	}
	qemuCheck(t, img, false)
	raw := filepath.Join(dir, "shadow.raw")
	os.WriteFile(raw, shadow, 0o600)
	qemuCompare(t, img, raw)

	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	workload(t, n, shadow, 4096, 100, 8, discardRule{})
	if headerU64(t, img, 72)&incompatDirty == 0 {
		t.Fatal("not marked dirty again")
	}
	g.Detach(b)
	g.Delete(n.Name())
	qemuCheck(t, img, false)
	os.WriteFile(raw, shadow, 0o600)
	qemuCompare(t, img, raw)
}

// TestWriteBackConsistent: metadata held in memory is written back in an
// order that leaves the file consistent whenever the writer might die:
// copies of the file taken between requests pass qemu-img check (leaks
// allowed), and after a Flush a copy also reads back as the guest wrote
// it.
func TestWriteBackConsistent(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	for _, tc := range []struct {
		name, opts string
		cs         int64
		snapshot   bool
	}{
		{"512", "cluster_size=512", 512, false},
		{"4k snapshot", "cluster_size=4096", 4096, true},
		{"ext 16k", "cluster_size=16384,extended_l2=on", 16384, false},
		{"lazy 512", "cluster_size=512,lazy_refcounts=on", 512, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := filepath.Join(dir, "wb.qcow2")
			const size = 4 << 20
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", tc.opts, img, itoa(size))
			shadow := make([]byte, size)
			if tc.snapshot {
				qemuIO(t, img, "write -P 0x5a 0 4M")
				run(t, dir, "qemu-img", "snapshot", "-c", "s", img)
				for i := range shadow {
					shadow[i] = 0x5a
				}
			}
			g := parallelFixture(t)
			n, b := openRW(t, g, img)
			defer g.Detach(b)
			cp := filepath.Join(dir, "copy.qcow2")
			raw := filepath.Join(dir, "shadow.raw")
			// A crash before some of the writes the requests make.
			r := rand.New(rand.NewPCG(3, 4))
			hooked := true // not while the copy is checked (and repaired)
			q := n.Image().(*image)
			defer func() { q.beforeWrite = nil }()
			q.beforeWrite = func() {
				if !hooked || r.IntN(8) != 0 {
					return
				}
				data, err := os.ReadFile(img)
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(cp, data, 0o600)
				if headerU64(t, cp, 72)&incompatDirty != 0 {
					return // lazy refcounts: checked between requests
				}
				qemuCheck(t, cp, true)
			}
			for round := range 6 {
				dr := discardRule{}
				if strings.Contains(tc.opts, "extended_l2=on") {
					dr.grain = tc.cs / 32
				}
				hooked = true
				workload(t, n, shadow, tc.cs, 40, uint64(round), dr)
				hooked = false
				data, err := os.ReadFile(img)
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(cp, data, 0o600)
				if headerU64(t, cp, 72)&incompatDirty != 0 {
					repairByWriting(t, cp) // lazy refcounts: as after a crash
				}
				qemuCheck(t, cp, true)
				if round%2 == 1 {
					hooked = true
					if err := n.Flush(); err != nil {
						t.Fatal(err)
					}
					hooked = false
					data, _ := os.ReadFile(img)
					os.WriteFile(cp, data, 0o600)
					if headerU64(t, cp, 72)&incompatDirty != 0 {
						repairByWriting(t, cp)
					}
					qemuCheck(t, cp, true)
					os.WriteFile(raw, shadow, 0o600)
					qemuCompare(t, cp, raw)
				}
			}
		})
	}
}
