package qcow2

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
)

// TestENOSPCFreesAllocations: writes that fail for lack of space leave no
// cluster allocated and unreferenced (QEMU's qcow2_alloc_cluster_abort):
// on a full disk, 1 MiB writes into unallocated space fail with ENOSPC;
// once there is space again, the image written so far checks without
// leaks, and writing goes on.
func TestENOSPCFreesAllocations(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	for _, tc := range []struct{ name, opts string }{
		{"64k", "cluster_size=64k"},
		{"4k lazy", "cluster_size=4k,lazy_refcounts=on"},
		{"512", "cluster_size=512"},
		{"extended L2", "cluster_size=64k,extended_l2=on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g, n, q, d := faultImage(t, tc.opts, "64M")
			defer g.Close()
			if _, err := n.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0); err != nil {
				t.Fatal(err)
			}
			if err := n.Flush(); err != nil {
				t.Fatal(err)
			}
			// Room for some metadata and part of one write: the next
			// writes fail somewhere in the middle.
			d.SetSpaceLimit(d.Used() + 200<<10)
			failed := 0
			for i := range 13 {
				_, err := n.WriteAt(bytes.Repeat([]byte{byte(i + 2)}, 1<<20), int64(i+2)<<20)
				switch {
				case errors.Is(err, unix.ENOSPC):
					failed++
				case err != nil:
					t.Fatalf("write %d: %v, want ENOSPC", i, err)
				}
			}
			if failed < 10 {
				t.Fatalf("only %d of 13 writes failed for lack of space", failed)
			}
			d.SetSpaceLimit(0)
			if _, err := n.WriteAt(bytes.Repeat([]byte{0x77}, 1<<20), 40<<20); err != nil {
				t.Fatalf("write with space again: %v", err)
			}
			if err := q.DropWriter(); err != nil {
				t.Fatal(err)
			}
			if st, out := qemuCheckBytes(t, d.Bytes()); st != 0 {
				t.Fatalf("after %d writes failed with ENOSPC, qemu-img check (exit %d):\n%s", failed, st,
					strings.Join(strings.SplitAfter(out, "\n")[max(0, strings.Count(out, "\n")-6):], ""))
			}
		})
	}
}
