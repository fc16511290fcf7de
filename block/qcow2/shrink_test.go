package qcow2

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"minivmm/block"
)

// TestShrinkInterop: Truncate to a smaller size against qemu-img resize
// --shrink on a copy of the same image: both check-clean, the same
// content and virtual size, and ours reads as the start of the original.
func TestShrinkInterop(t *testing.T) {
	needQemu(t)
	for _, tc := range []struct {
		name    string
		opts    string
		size    int64
		shrinks []int64
		backing bool
		snap    bool
		comp    bool
	}{
		{name: "64k", opts: "cluster_size=65536", size: 32 << 20, shrinks: []int64{20<<20 + 4096 + 512, 8 << 20, 65536}},
		{name: "512 clusters, many L2 tables", opts: "cluster_size=512", size: 4 << 20, shrinks: []int64{3<<20 + 1536, 32768, 512}},
		{name: "4k v2", opts: "cluster_size=4096,compat=0.10", size: 16 << 20, shrinks: []int64{10<<20 + 3*512, 2 << 20}},
		{name: "4k refcount_bits=1", opts: "cluster_size=4096,refcount_bits=1", size: 16 << 20, shrinks: []int64{5<<20 + 512}},
		{name: "extended L2 backing", opts: "cluster_size=65536,extended_l2=on", size: 32 << 20, backing: true, shrinks: []int64{17<<20 + 2560, 1 << 20}},
		{name: "compressed", opts: "cluster_size=65536", size: 8 << 20, comp: true, shrinks: []int64{5<<20 + 1024, 65536 + 512}},
		{name: "v3 internal snapshot", opts: "cluster_size=4096", size: 16 << 20, snap: true, shrinks: []int64{6<<20 + 512, 1 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "ours.qcow2")
			args := []string{"create", "-q", "-f", "qcow2", "-o", tc.opts}
			if tc.backing {
				os.WriteFile(filepath.Join(dir, "base.raw"), bytes.Repeat([]byte("base"), int(tc.size/4)), 0o600)
				args = append(args, "-b", "base.raw", "-F", "raw")
			}
			if tc.comp {
				src := filepath.Join(dir, "src.raw")
				os.WriteFile(src, compressible(int(tc.size), 5), 0o600)
				run(t, dir, "qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", tc.opts, src, img)
			} else {
				run(t, dir, "qemu-img", append(args, img, itoa(tc.size))...)
			}
			qemuIO(t, img, writes(tc.size)[:4]...)
			if tc.snap {
				run(t, dir, "qemu-img", "snapshot", "-c", "s", img)
				qemuIO(t, img, "write -P 0x9a 0 "+itoa(tc.size*3/4))
			}
			var snapBefore []byte
			if tc.snap {
				snapBefore = snapshotContents(t, dir, img, []string{"s"})["s"]
			}
			orig := qemuRaw(t, dir, img)
			for _, size := range tc.shrinks {
				theirs := filepath.Join(dir, "theirs.qcow2")
				data, _ := os.ReadFile(img)
				os.WriteFile(theirs, data, 0o600)
				run(t, dir, "qemu-img", "resize", "-q", "--shrink", theirs, itoa(size))

				g := fixture(t)
				n, b := openRW(t, g, img)
				if err := n.Truncate(size); err != nil {
					t.Fatalf("shrink to %d: %v", size, err)
				}
				if n.Length() != size {
					t.Fatalf("length %d after shrinking to %d", n.Length(), size)
				}
				if got := readAll(t, n); !bytes.Equal(got, orig[:size]) {
					t.Fatalf("shrunk to %d: differs at %d", size, firstDiff(got, orig[:size]))
				}
				g.Detach(b)
				g.Delete(n.Name())

				qemuCheck(t, img, false)
				if out, err := exec.Command("qemu-img", "compare", img, theirs).CombinedOutput(); err != nil {
					t.Fatalf("qemu-img compare with qemu-img resize --shrink: %v\n%s", err, out)
				}
				if a, b := virtualSize(t, img), virtualSize(t, theirs); a != b || a != size {
					t.Errorf("virtual size %d, qemu-img's %d, want %d", a, b, size)
				}
				if tc.snap {
					a, b := snapshotContents(t, dir, img, []string{"s"})["s"], snapshotContents(t, dir, theirs, []string{"s"})["s"]
					if !bytes.Equal(a, b) {
						t.Errorf("snapshot reads differently from qemu-img's shrunk copy at byte %d", firstDiff(a, b))
					}
				}
				ours, _ := os.Stat(img)
				qemus, _ := os.Stat(theirs)
				t.Logf("shrunk to %d: file %d bytes, qemu-img's %d", size, ours.Size(), qemus.Size())
				orig = orig[:size]
			}
			if tc.snap {
				// Reverting (on a copy) gives the snapshot back at its size.
				cp := filepath.Join(dir, "copy.qcow2")
				data, _ := os.ReadFile(img)
				os.WriteFile(cp, data, 0o600)
				run(t, dir, "qemu-img", "snapshot", "-a", "s", cp)
				qemuCheck(t, cp, false)
				if got := qemuRaw(t, dir, cp); !bytes.Equal(got, snapBefore) {
					t.Errorf("snapshot changed at byte %d", firstDiff(got, snapBefore))
				}
			}
		})
	}
}

func virtualSize(t *testing.T, img string) int64 {
	t.Helper()
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(run(t, "", "qemu-img", "info", "--output=json", img), &info); err != nil {
		t.Fatal(err)
	}
	return info.VirtualSize
}

// TestShrinkRefused: what QEMU refuses is refused with its message, and
// the image stays as it was.
func TestShrinkRefused(t *testing.T) {
	needQemu(t)
	for _, tc := range []struct {
		name, opts string
		snap       bool
		size       int64
		want       string
		notSupp    bool
	}{
		{name: "not a multiple of 512", opts: "cluster_size=4096", size: 1<<20 + 100, want: "The new size must be a multiple of 512"},
		{name: "negative", opts: "cluster_size=4096", size: -512, want: "qcow2: invalid image size -512"},
		{name: "v2 with snapshots", opts: "compat=0.10", snap: true, size: 1 << 20, want: "Can't resize a v2 image which has snapshots", notSupp: true},
		{name: "v2 with snapshots, growing", opts: "compat=0.10", snap: true, size: 8 << 20, want: "Can't resize a v2 image which has snapshots", notSupp: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "img.qcow2")
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", tc.opts, img, "4M")
			qemuIO(t, img, "write -P 0x11 0 4M")
			if tc.snap {
				run(t, dir, "qemu-img", "snapshot", "-c", "s", img)
			}
			before, _ := os.ReadFile(img)
			g := fixture(t)
			n, b := openRW(t, g, img)
			err := n.Truncate(tc.size)
			var be *block.Error
			if err == nil || !errors.As(err, &be) || be.Err.Error() != tc.want || errors.Is(err, block.ErrNotSupported) != tc.notSupp {
				t.Errorf("Truncate(%d): %v; want %q", tc.size, err, tc.want)
			}
			if n.Length() != 4<<20 {
				t.Errorf("length %d", n.Length())
			}
			g.Detach(b)
			g.Delete(n.Name())
			if after, _ := os.ReadFile(img); !bytes.Equal(after, before) {
				t.Error("the image changed")
			}
			qemuCheck(t, img, false)
		})
	}
}
