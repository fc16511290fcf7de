package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/qemuopen"
)

const (
	ioSize    = 4096
	imageSize = 64 << 20
)

// testImage is a fully written file, so that reads hit the page cache and
// not holes. It is written in 64 KiB pieces, as img convert writes a
// qcow2's clusters: on kernel 6.18 a 4 KiB overwrite of a file written in
// one large write costs 2-3x more (larger page-cache folios), which would
// make the raw layers look slower than qcow2-file.
func testImage(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "img")
	data := make([]byte, imageSize)
	for i := range data {
		data[i] = byte(i)
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for off := 0; off < len(data); off += 64 << 10 {
		if _, err := f.WriteAt(data[off:off+64<<10], int64(off)); err != nil {
			b.Fatal(err)
		}
	}
	return path
}

func options(b *testing.B, format string, a ...any) block.Options {
	b.Helper()
	d := json.NewDecoder(strings.NewReader(fmt.Sprintf(format, a...)))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		b.Fatal(err)
	}
	return m
}

// ioTarget is what a benchmark drives: a node, or the plain-pread floor.
type ioTarget interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
}

// floor is a bare pread/pwrite loop on an fd: the cost without minivmm.
type floor int

func (f floor) ReadAt(p []byte, off int64) (int, error)  { return unix.Pread(int(f), p, off) }
func (f floor) WriteAt(p []byte, off int64) (int, error) { return unix.Pwrite(int(f), p, off) }

// runIO issues b.N requests of ioSize over depth goroutines, each walking
// the image sequentially from its own start.
func runIO(b *testing.B, t ioTarget, write bool, depth int) {
	b.SetBytes(ioSize)
	b.ReportAllocs()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := 0; w < depth; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, ioSize)
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				off := i * ioSize % imageSize
				var err error
				if write {
					_, err = t.WriteAt(buf, off)
				} else {
					_, err = t.ReadAt(buf, off)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkLayers compares 4 KiB requests through each layer with the
// pread/pwrite floor on the same file, at depth 1 and 32 (qcow2-file: the
// same data converted to a fully allocated qcow2).
func BenchmarkLayers(b *testing.B) {
	for _, depth := range []int{1, 32} {
		for _, write := range []bool{false, true} {
			op := map[bool]string{false: "read", true: "write"}[write]
			for _, layer := range []string{"floor", "null-co", "file", "raw-file", "qcow2-file"} {
				b.Run(fmt.Sprintf("%s/%s/depth=%d", op, layer, depth), func(b *testing.B) {
					runIO(b, layerTarget(b, layer), write, depth)
				})
			}
		}
	}
}

func layerTarget(b *testing.B, layer string) ioTarget {
	path := testImage(b)
	if layer == "floor" {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { unix.Close(fd) })
		return floor(fd)
	}
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	b.Cleanup(func() { g.Close(); reg.CloseAll() })
	var o block.Options
	switch layer {
	case "null-co":
		o = options(b, `{"driver":"null-co","size":%d}`, imageSize)
	case "file":
		o = options(b, `{"driver":"file","filename":%q}`, path)
	case "raw-file":
		o = options(b, `{"driver":"raw","file":{"driver":"file","filename":%q}}`, path)
	case "qcow2-file":
		// The same data as a fully allocated qcow2: writes overwrite
		// clusters the image owns (the in-place path).
		qcow := path + ".qcow2"
		runTool(b, minivmmBinary(b), "img", "convert", "-f", "raw", "-O", "qcow2", path, qcow)
		o = options(b, `{"driver":"qcow2","file":{"driver":"file","filename":%q}}`, qcow)
	}
	n, err := g.Add(o)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := g.Attach("", n, block.Perm{Write: true}); err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkReopenFdset is one in-process round trip of a raw node's file
// read-only -> read-write -> read-only over an fdset holding both fds
// (QEMU's QMP blockdev-reopen takes ~2 ms here).
func BenchmarkReopenFdset(b *testing.B) {
	path := filepath.Join(b.TempDir(), "img")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		b.Fatal(err)
	}
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	defer func() { g.Close(); reg.CloseAll() }()
	set := int64(1)
	for _, mode := range []int{unix.O_RDONLY, unix.O_RDWR} {
		fd, err := unix.Open(path, mode|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		reg.AddFd(fd, qemuopen.AddRequest{SetID: &set})
	}
	if _, err := g.Add(options(b, `{"driver":"file","node-name":"f","read-only":true,"filename":"/dev/fdset/1"}`)); err != nil {
		b.Fatal(err)
	}
	if _, err := g.Add(options(b, `{"driver":"raw","node-name":"r","read-only":true,"file":"f"}`)); err != nil {
		b.Fatal(err)
	}
	rw := []block.Options{
		options(b, `{"driver":"file","node-name":"f","read-only":false,"filename":"/dev/fdset/1"}`),
		options(b, `{"driver":"raw","node-name":"r","read-only":false,"file":"f"}`),
	}
	ro := []block.Options{
		options(b, `{"driver":"raw","node-name":"r","read-only":true,"file":"f"}`),
		options(b, `{"driver":"file","node-name":"f","read-only":true,"filename":"/dev/fdset/1"}`),
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := g.Reopen(rw); err != nil {
			b.Fatal(err)
		}
		if err := g.Reopen(ro); err != nil {
			b.Fatal(err)
		}
	}
}
