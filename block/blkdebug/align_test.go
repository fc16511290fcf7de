package blkdebug

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"minivmm/block"
	_ "minivmm/block/raw"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

const alignImageSize = 64 << 10

// alignedNode opens top over a 64 KiB file of 0x11 (top: extra options
// of the node above the file, or nil for the file alone) and attaches a
// writer.
func alignedNode(t *testing.T, top func(file block.Options) block.Options, direct bool) (*block.Backend, *block.Node, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, bytes.Repeat([]byte{0x11}, alignImageSize), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	t.Cleanup(func() { g.Close(); reg.CloseAll() })
	o := block.Options{"driver": "file", "filename": path}
	if direct {
		o["cache"] = block.Options{"direct": true}
	}
	if top != nil {
		o = top(o)
	}
	n, err := g.Add(o)
	if err != nil {
		if direct && errors.Is(err, syscall.EINVAL) {
			t.Skipf("no O_DIRECT here: %v", err)
		}
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	return b, n, path
}

func blkdebugOver(extra block.Options) func(block.Options) block.Options {
	return func(file block.Options) block.Options {
		o := block.Options{"driver": "blkdebug", "image": file}
		for k, v := range extra {
			o[k] = v
		}
		return o
	}
}

// TestLimitsDeclared: blkdebug's options become the node's limits, the
// file's O_DIRECT alignment the file node's, and a node above takes its
// child's transfer and discard limits but not its alignment (QEMU's
// bdrv_merge_limits).
func TestLimitsDeclared(t *testing.T) {
	fdtest.Check(t)
	_, n, _ := alignedNode(t, blkdebugOver(block.Options{"align": 4096, "max-transfer": 8192,
		"opt-write-zero": 8192, "max-write-zero": 16384, "opt-discard": 4096, "max-discard": 8192}), false)
	want := block.Limits{RequestAlignment: 4096, MaxTransfer: 8192, PwriteZeroesAlignment: 8192, MaxPwriteZeroes: 16384,
		PdiscardAlignment: 4096, MaxPdiscard: 8192}
	if got := n.Limits(); got != want {
		t.Errorf("blkdebug limits %+v, want %+v", got, want)
	}
	_, raw, _ := alignedNode(t, func(file block.Options) block.Options {
		return block.Options{"driver": "raw", "file": blkdebugOver(block.Options{"align": 4096, "max-transfer": 8192, "opt-discard": 4096})(file)}
	}, false)
	if got, want := raw.Limits(), (block.Limits{RequestAlignment: 1, MaxTransfer: 8192, PdiscardAlignment: 4096}); got != want {
		t.Errorf("raw over blkdebug: limits %+v, want %+v", got, want)
	}
	_, f, _ := alignedNode(t, nil, true)
	if a := f.Limits().RequestAlignment; a < 512 || a&(a-1) != 0 {
		t.Errorf("file with cache.direct=on: request alignment %d, want O_DIRECT's (a power of two, at least 512)", a)
	}
}

// TestRMWReadErrorFailsWrite: an error on the read of a read-modify-
// write fails the write and leaves the image as it was. QEMU 7.2 ignores
// that error and writes its padding buffer's contents (zeroes, in a
// fresh allocation) over the neighbouring bytes: qemu-io -c 'write -P
// 0x22 512 1k' on blkdebug align=4096 with inject-error
// event=pwritev_rmw_head once=on reports success and leaves bytes
// 0..511 zero.
func TestRMWReadErrorFailsWrite(t *testing.T) {
	fdtest.Check(t)
	for _, ev := range []string{"pwritev_rmw_head", "pwritev_rmw_tail"} {
		b, _, path := alignedNode(t, blkdebugOver(block.Options{"align": 4096,
			"inject-error": []any{map[string]any{"event": ev, "once": true}}}), false)
		if _, err := b.WriteAt(bytes.Repeat([]byte{0x22}, 1024), 512); !errors.Is(err, syscall.EIO) {
			t.Errorf("%s: write: %v, want EIO", ev, err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, bytes.Repeat([]byte{0x11}, alignImageSize)) {
			t.Errorf("%s: the failed write changed the image", ev)
		}
		// The rule went with the read: the write goes through now.
		if _, err := b.WriteAt(bytes.Repeat([]byte{0x22}, 1024), 512); err != nil {
			t.Errorf("%s: second write: %v", ev, err)
		}
	}
}

// TestUnalignedDiscardWithoutOptDiscard: QEMU 7.2's blkdebug divides
// by its discard alignment, 0 unless opt-discard is given, when the
// block layer hands it an unaligned head or tail: qemu-io dies of
// SIGFPE on 'discard 5000 10000' with align=4096. Here the pieces are
// dropped and the aligned middle discarded.
func TestUnalignedDiscardWithoutOptDiscard(t *testing.T) {
	fdtest.Check(t)
	b, _, _ := alignedNode(t, blkdebugOver(block.Options{"align": 4096, "discard": "unmap"}), false)
	if err := b.Discard(5000, 10000); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, alignImageSize)
	if _, err := b.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	for i, c := range got {
		if want := byte(0x11); (i < 8192 || i >= 12288) && c != want || i >= 8192 && i < 12288 && c != 0 {
			t.Fatalf("byte %d is %#x after the discard", i, c)
		}
	}
}

// TestConcurrentUnalignedWrites runs unaligned writes, write-zeroes and
// aligned writes from many goroutines on nodes that align requests
// (blkdebug align=4096 with split transfers; a file with O_DIRECT),
// against a shadow of the image: each goroutine owns its own bytes, but
// every 4 KiB block is shared, so a read-modify-write that raced with
// another write of its block would lose data.
func TestConcurrentUnalignedWrites(t *testing.T) {
	fdtest.Check(t)
	for _, c := range []struct {
		name   string
		top    func(block.Options) block.Options
		direct bool
	}{
		{"blkdebug", blkdebugOver(block.Options{"align": 4096, "max-transfer": 8192, "opt-write-zero": 8192}), false},
		{"file-direct", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, _, path := alignedNode(t, c.top, c.direct)
			shadow := bytes.Repeat([]byte{0x11}, alignImageSize)
			const workers, stripe = 8, 96
			// Blocks 0-11: stripes of bytes, owned round robin; blocks
			// 12-15: owned whole by one worker each, written aligned
			// and unaligned.
			const shared = 12 * 4096
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(w), 7))
					for i := range 300 {
						var off, n int64
						if w < 4 && i%5 == 0 {
							blk := int64(12 + w)
							off, n = blk*4096, 4096
							if i%10 == 0 {
								off, n = blk*4096+r.Int64N(4000), 1+r.Int64N(90)
							}
						} else {
							s := int64(w) + int64(r.IntN(shared/stripe/workers))*workers
							lo := s * stripe
							off = lo + r.Int64N(stripe)
							n = 1 + r.Int64N(lo+stripe-off)
						}
						p := bytes.Repeat([]byte{byte(w<<4 | i&15)}, int(n))
						var err error
						if i%7 == 3 {
							clear(p)
							err = b.WriteZeroes(off, n, false)
						} else if i%3 == 1 && n > 1 {
							// A guest's scatter list: the driver must
							// still get one aligned request.
							k := 1 + r.Int64N(n-1)
							_, err = b.WriteV([][]byte{p[:k], p[k:]}, off, 0)
						} else {
							_, err = b.WriteAt(p, off)
						}
						if err != nil {
							errs <- fmt.Errorf("worker %d: %d bytes at %d: %w", w, n, off, err)
							return
						}
						copy(shadow[off:], p) // this worker's bytes only
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			got := make([]byte, alignImageSize)
			if _, err := b.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(got, shadow); i >= 0 {
				t.Fatalf("byte %d reads %#x, the writes left %#x", i, got[i], shadow[i])
			}
			// Reads padded and split, into a scatter list.
			for off := int64(1); off < alignImageSize-7000; off += 3001 {
				clear(got)
				v := [][]byte{got[:1000], got[1000:1001], got[1001:7000]}
				if _, err := b.ReadV(v, off); err != nil {
					t.Fatalf("readv at %d: %v", off, err)
				}
				if i := firstDiff(got[:7000], shadow[off:off+7000]); i >= 0 {
					t.Fatalf("readv at %d: byte %d reads %#x, want %#x", off, i, got[i], shadow[off+int64(i)])
				}
			}
			onDisk, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(onDisk, shadow); i >= 0 {
				t.Fatalf("byte %d of the file is %#x, the writes left %#x", i, onDisk[i], shadow[i])
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// TestWriterNeedsAlignedSize: as QEMU, a writer that may not resize is
// refused on a node whose size is not a multiple of its alignment (an
// unaligned write's padding would reach past the end); one that may
// resize (a format's metadata child) is not.
func TestWriterNeedsAlignedSize(t *testing.T) {
	fdtest.Check(t)
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, make([]byte, 5000), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	defer func() { g.Close(); reg.CloseAll() }()
	n, err := g.Add(block.Options{"driver": "raw", "file": block.Options{"driver": "blkdebug", "align": 4096,
		"image": block.Options{"driver": "file", "filename": path}}})
	if err != nil {
		t.Fatal(err)
	}
	const want = "Cannot get 'write' permission without 'resize': Image size is not a multiple of request alignment"
	if _, err := g.Attach("", n, block.Perm{Write: true}); err == nil || err.Error() != want {
		t.Fatalf("attach for writing: %v, want %q", err, want)
	}
	if _, err := g.Attach("", n, block.Perm{Write: true, Image: true}); err != nil {
		t.Fatalf("attach for writing and resizing: %v", err)
	}
}
