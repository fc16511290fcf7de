package engine

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// TestConvertCopyRangeQcow2Target: with CopyRange, a qcow2 destination
// takes the source's data through copy_file_range into clusters it
// allocates (or owns already, -n), unaligned ranges included; the image
// QEMU then reads is the source (qemu-img compare) and has no leaks nor
// corruptions (qemu-img check); a refusal (EXDEV) at the first call
// leaves nothing allocated for it and the copy goes through writes.
func TestConvertCopyRangeQcow2Target(t *testing.T) {
	needQemuIO(t)
	fdtest.Check(t)
	// Data at unaligned places of a sparse raw source: partly covered
	// clusters take the copy and zeroes around it.
	extents := [][2]int64{{3000, 70000}, {200 << 10, 5 << 10}, {1 << 20, 1 << 20}, {3<<20 + 512, 1 << 20}, {(6 << 20) - 777, 777}}
	for _, tc := range []struct {
		name      string
		opts      string // qemu-img create -o of the target
		existing  bool   // -n: the target holds data already (owned clusters: in place)
		fail      error
		wantBytes int64 // offloaded; -1: all of the source's data
	}{
		{name: "64k", opts: "cluster_size=65536", wantBytes: -1},
		{name: "4k", opts: "cluster_size=4096", wantBytes: -1},
		{name: "512", opts: "cluster_size=512", wantBytes: -1},
		{name: "extended L2", opts: "cluster_size=32768,extended_l2=on", wantBytes: -1},
		{name: "lazy refcounts", opts: "lazy_refcounts=on", wantBytes: -1},
		{name: "v2", opts: "compat=0.10", wantBytes: -1},
		{name: "existing", opts: "cluster_size=65536", existing: true, wantBytes: -1},
		{name: "existing extended L2", opts: "cluster_size=32768,extended_l2=on", existing: true, wantBytes: -1},
		{name: "EXDEV", opts: "cluster_size=65536", fail: unix.EXDEV},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src.raw")
			var want []byte
			{
				want = make([]byte, 6<<20)
				for i, e := range extents {
					for j := e[0]; j < e[0]+e[1]; j++ {
						want[j] = byte(i+1) ^ byte(j/512)
					}
				}
				f, err := os.Create(src)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range extents {
					if _, err := f.WriteAt(want[e[0]:e[0]+e[1]], e[0]); err != nil {
						t.Fatal(err)
					}
				}
				if err := f.Truncate(int64(len(want))); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			dataBytes := hostData(t, src)
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", tc.opts, "dst.qcow2", "6M")
			if tc.existing {
				// Every cluster allocated, with other data.
				qemu(t, dir, "qemu-io", "-c", "write -P 0x5a 0 6M", "dst.qcow2")
			}
			reg := qemuopen.New(qemuopen.Config{})
			g := block.NewGraph(reg)
			sn, err := g.Add(block.Options{"driver": "raw", "read-only": true, "file": block.Options{"driver": "file", "filename": src}})
			if err != nil {
				t.Fatal(err)
			}
			dst, err := g.Add(block.Options{"driver": "qcow2", "file": block.Options{"driver": "file", "filename": filepath.Join(dir, "dst.qcow2")}})
			if err != nil {
				t.Fatal(err)
			}
			w, err := g.Attach("", dst, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			var calls, copied atomic.Int64
			hook := func(sfd int, soff int64, dfd int, doff int64, n int) (int, error) {
				calls.Add(1)
				if tc.fail != nil {
					return 0, tc.fail
				}
				k, err := CopyFileRange(sfd, soff, dfd, doff, n)
				copied.Add(int64(k))
				return k, err
			}
			err = Convert(context.Background(), []*block.Node{sn}, dst, ConvertOptions{
				Workers: 4, InOrder: true, TargetZero: !tc.existing, BackingLen: -1, CopyRange: hook,
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(read(t, dst, 0, 6<<20), want) {
				t.Error("the copy reads differently")
			}
			if err := dst.Flush(); err != nil {
				t.Fatal(err)
			}
			g.Detach(w)
			g.Close()
			reg.CloseAll()
			wantBytes := tc.wantBytes
			if wantBytes < 0 {
				wantBytes = dataBytes
			}
			if copied.Load() != wantBytes || (tc.fail != nil && calls.Load() != 1) {
				t.Errorf("%d bytes offloaded in %d calls; want %d", copied.Load(), calls.Load(), wantBytes)
			}
			qemu(t, dir, "qemu-img", "check", "dst.qcow2")
			qemu(t, dir, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", "src.raw", "dst.qcow2")
		})
	}
}

// TestConvertCopyRangeQcow2EIO: an error copying into a qcow2 target
// fails the convert and leaves the clusters allocated for it free: the
// image QEMU checks has no leak.
func TestConvertCopyRangeQcow2EIO(t *testing.T) {
	needQemuIO(t)
	fdtest.Check(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	if err := os.WriteFile(src, bytes.Repeat([]byte{7}, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	qemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "dst.qcow2", "1M")
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	defer func() { g.Close(); reg.CloseAll() }()
	sn, err := g.Add(block.Options{"driver": "raw", "read-only": true, "file": block.Options{"driver": "file", "filename": src}})
	if err != nil {
		t.Fatal(err)
	}
	dst, err := g.Add(block.Options{"driver": "qcow2", "file": block.Options{"driver": "file", "filename": filepath.Join(dir, "dst.qcow2")}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := g.Attach("", dst, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	hook := func(int, int64, int, int64, int) (int, error) { return 0, unix.EIO }
	err = Convert(context.Background(), []*block.Node{sn}, dst, ConvertOptions{
		Workers: 1, InOrder: true, TargetZero: true, BackingLen: -1, CopyRange: hook,
	})
	if !errors.Is(err, unix.EIO) {
		t.Fatalf("error %v, want EIO", err)
	}
	if err := dst.Flush(); err != nil {
		t.Fatal(err)
	}
	g.Detach(w)
	g.Close()
	qemu(t, dir, "qemu-img", "check", "dst.qcow2")
}

// hostData is how many bytes of the file at path hold data (SEEK_DATA).
func hostData(t *testing.T, path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for off := int64(0); off < st.Size(); {
		d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			break
		}
		h, err := unix.Seek(int(f.Fd()), d, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		n += h - d
		off = h
	}
	return n
}
