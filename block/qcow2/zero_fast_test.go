package qcow2

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"minivmm/block"
)

// TestWriteZeroesFast: zeroing without fallback succeeds where metadata
// does it and is refused, with the image unchanged, where data would
// have to be written.
func TestWriteZeroesFast(t *testing.T) {
	needQemu(t)
	const cs = 65536
	for _, tt := range []struct {
		name, opts, compressed string
		off, n                 int64
		ok                     bool
	}{
		{"whole data cluster", "", "", 0, cs, true},
		{"part of a data cluster", "", "", cs + 100, 100, false},
		{"part of an unallocated cluster", "", "", 5*cs + 10, 100, true},
		{"whole cluster with a data edge", "", "", 2*cs - 512, cs + 1024, false},
		{"whole clusters to the end of the image", "", "", 2 * cs, 14 * cs, true},
		{"version 2", "compat=0.10", "", 0, cs, false},
		{"whole subclusters", "extended_l2=on", "", cs + 2048, 4096, true},
		{"part of a data subcluster", "extended_l2=on", "", cs + 100, 100, false},
		{"subclusters of a compressed cluster", "extended_l2=on", "write -c -P 0x77 128k 64k", 2*cs + 2048, 2048, false},
		{"a whole compressed cluster", "extended_l2=on", "write -c -P 0x77 128k 64k", 2 * cs, cs, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "t.qcow2")
			opts := "cluster_size=64k"
			if tt.opts != "" {
				opts += "," + tt.opts
			}
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, img, "1M")
			qemuIO(t, img, "write -P 0x11 0 128k")
			if tt.compressed != "" {
				qemuIO(t, img, tt.compressed)
			}
			g := fixture(t)
			n, err := openQcow2(g, img, block.Options{"read-only": false})
			if err != nil {
				t.Fatal(err)
			}
			b, err := g.Attach("", n, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			before := readAll(t, n)
			err = n.WriteZeroesFast(tt.off, tt.n, false)
			after := readAll(t, n)
			want := bytes.Clone(before)
			if tt.ok {
				clear(want[tt.off : tt.off+tt.n])
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
			} else if !errors.Is(err, block.ErrNotSupported) {
				t.Fatalf("error %v, want ErrNotSupported", err)
			}
			if !bytes.Equal(after, want) {
				t.Fatal("contents differ from what the answer says")
			}
			g.Detach(b)
			g.Delete(n.Name())
			qemuCheck(t, img, false)
		})
	}
}
