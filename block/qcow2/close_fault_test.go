package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block/faultdisk"
	"minivmm/internal/fdtest"
)

// TestCloseErrorsLazyRefcounts: with lazy refcounts, closing writes back
// the L2 tables and refcount blocks held in memory, then clears the dirty
// bit, each step flushed. Every one of those writes and flushes fails
// once, in turn: DropWriter returns the error, and the dirty bit stays on
// disk (the refcounts there are stale). After a failed write, a retry
// finishes the job and the image checks clean; after a failed flush the
// file's page cache may have dropped what it held, so, as QEMU, the
// image never claims to be clean again.
func TestCloseErrorsLazyRefcounts(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	for _, kind := range []faultdisk.Kind{faultdisk.Write, faultdisk.Flush} {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			for k := int64(0); ; k++ {
				if !closeFault(t, kind, k) {
					if k < 3 {
						t.Fatalf("only %d %ss at close", k, kind)
					}
					return
				}
			}
		})
	}
}

// closeFault fails the k-th operation of kind at close; false if there
// was none.
func closeFault(t *testing.T, kind faultdisk.Kind, k int64) bool {
	t.Helper()
	g, n, q, d := faultImage(t, "lazy_refcounts=on,cluster_size=4096", "16M")
	defer g.Close()
	for i, off := range []int64{0, 5 << 20, 9<<20 + 100} {
		if _, err := n.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 300<<10), off); err != nil {
			t.Fatal(err)
		}
	}
	if !dirtyOnDisk(d.Bytes()) {
		t.Fatal("lazy refcounts: the first write did not mark the image dirty")
	}
	r := d.AddRule(&faultdisk.Rule{Kinds: kind, After: k, Times: 1})
	err := q.DropWriter()
	if r.Fired() == 0 {
		if err != nil {
			t.Fatalf("no fault, close: %v", err)
		}
		return false
	}
	if !errors.Is(err, unix.EIO) {
		t.Fatalf("%s %d failed: close returned %v, want EIO", kind, k, err)
	}
	if !dirtyOnDisk(d.Durable()) {
		t.Fatalf("%s %d failed: the dirty bit is gone from the disk", kind, k)
	}
	err = q.DropWriter()
	switch {
	case kind == faultdisk.Flush && err == nil:
		t.Fatalf("flush %d failed once: the retry claims the image clean", k)
	case kind == faultdisk.Flush && !dirtyOnDisk(d.Bytes()):
		t.Fatalf("flush %d failed once: the retry cleared the dirty bit", k)
	case kind == faultdisk.Write && err != nil:
		t.Fatalf("write %d failed once: the retry failed too: %v", k, err)
	case kind == faultdisk.Write:
		if dirtyOnDisk(d.Durable()) {
			t.Fatalf("write %d failed once: the retry left the image dirty", k)
		}
		if st, out := qemuCheckBytes(t, d.Durable()); st != 0 {
			t.Fatalf("write %d failed once, then the retry: qemu-img check:\n%s", k, out)
		}
	}
	return true
}

// dirtyOnDisk reports the dirty bit in the header of image bytes b.
func dirtyOnDisk(b []byte) bool { return binary.BigEndian.Uint64(b[72:])&incompatDirty != 0 }
