package compressfilter

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	_ "minivmm/block/file"
	"minivmm/block/qcow2"
	_ "minivmm/block/raw"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

const cs = 64 << 10

// newImage creates a 2 MiB qcow2 image with 64 KiB clusters.
func newImage(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "t.qcow2")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := qcow2.Create(f, qcow2.CreateOptions{Size: 2 << 20, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	return p
}

func openCompress(t *testing.T, g *block.Graph, path string) *block.Backend {
	t.Helper()
	n, err := g.Add(block.Options{"driver": Name, "file": block.Options{"driver": "qcow2",
		"file": block.Options{"driver": "file", "filename": path}}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// compressed counts the image's compressed clusters, as qemu-img check.
func compressed(t *testing.T, path string) int64 {
	t.Helper()
	g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
	defer g.Close()
	f, err := g.Add(block.Options{"driver": "file", "filename": path, "read-only": true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := qcow2.Check(f, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Corruptions != 0 || res.Leaks != 0 || res.CheckErrors != 0 {
		t.Fatalf("check: %+v", res)
	}
	return res.CompressedClusters
}

// TestWrites: every write through the filter lands in compressed
// clusters, whole ones, padded with what the clusters held.
func TestWrites(t *testing.T) {
	for _, tc := range []struct {
		name       string
		off, n     int64
		compressed int64
	}{
		{"one cluster", 0, cs, 1},
		{"three and a half clusters", 0, 3*cs + cs/2, 4},
		{"unaligned both ends", cs + cs/4, 3*cs + cs/2, 4},
		{"one byte", 5*cs + 7, 1, 1},
		{"the last cluster", 2<<20 - cs, cs, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fdtest.Check(t)
			path := newImage(t)
			g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
			b := openCompress(t, g, path)
			p := bytes.Repeat([]byte("minivmm!"), int(tc.n+7)/8)[:tc.n]
			if _, err := b.WriteAt(p, tc.off); err != nil {
				g.Close()
				t.Fatal(err)
			}
			got := make([]byte, 2<<20)
			if _, err := b.ReadAt(got, 0); err != nil {
				g.Close()
				t.Fatal(err)
			}
			want := make([]byte, 2<<20)
			copy(want[tc.off:], p)
			if !bytes.Equal(got, want) {
				t.Error("read back something else")
			}
			if err := g.Close(); err != nil {
				t.Fatal(err)
			}
			if n := compressed(t, path); n != tc.compressed {
				t.Errorf("%d compressed clusters, want %d", n, tc.compressed)
			}
		})
	}
}

// TestRewrite: a cluster written once cannot be written compressed
// again (QEMU's qcow2: Input/output error); zeroes pass as they are.
func TestRewrite(t *testing.T) {
	fdtest.Check(t)
	path := newImage(t)
	g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
	defer g.Close()
	b := openCompress(t, g, path)
	if _, err := b.WriteAt(make([]byte, cs), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt([]byte{1}, 100); !errors.Is(err, unix.EIO) {
		t.Fatalf("rewrite: %v, want EIO", err)
	}
	if err := b.WriteZeroes(cs, cs, false); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusals(t *testing.T) {
	fdtest.Check(t)
	p := filepath.Join(t.TempDir(), "r")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
	defer g.Close()
	for _, tc := range []struct {
		name string
		file block.Options
		err  string
	}{
		{"raw", block.Options{"driver": "raw", "file": block.Options{"driver": "file", "filename": p}},
			"Compression is not supported for underlying format: raw"},
		{"file", block.Options{"driver": "file", "filename": p},
			"Compression is not supported for underlying format: file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := g.Add(block.Options{"driver": Name, "file": tc.file})
			if err == nil || err.Error() != tc.err {
				t.Fatalf("got %v, want %q", err, tc.err)
			}
			if n := len(g.Nodes()); n != 0 {
				t.Fatalf("%d nodes left behind", n)
			}
		})
	}
}
