package qcow2

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"minivmm/block"
)

// TestTruncateGrowOverBacking: Node.Truncate growing a qcow2 node whose
// backing file is longer than it makes the new area read as zeroes, not
// as the backing file nor as what an earlier shrink left in the last
// cluster (issue 11), as QEMU's bdrv_co_truncate + qcow2_co_truncate do.
// The same sizes applied with qemu-img resize to a copy must give the
// same bytes (as qemu-img convert reads them) and the image pass check.
func TestTruncateGrowOverBacking(t *testing.T) {
	needQemu(t)
	const k = 1 << 10
	for _, tc := range []struct {
		name    string
		create  []string // qemu-img create options for ov.qcow2
		size    int64
		write   int64 // 0x22 written over [0, write) of ov
		sizes   []int64
		wantErr bool
	}{
		{"grow", nil, 512 * k, 0, []int64{1024 * k}, false},
		{"shrink-then-grow", nil, 1024 * k, 1024 * k, []int64{520 * k, 567 * k}, false},
		{"small-clusters", []string{"-o", "cluster_size=4k"}, 1000 * k, 1000 * k, []int64{511 * k, 2048 * k}, false},
		{"extended-l2", []string{"-o", "extended_l2=on"}, 1024 * k, 1024 * k, []int64{520 * k, 567 * k, 900 * k}, false},
		{"backing-shorter", nil, 1024 * k, 0, []int64{3072 * k}, false},
		{"compat-0.10", []string{"-o", "compat=0.10"}, 512 * k, 0, []int64{1024 * k}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := fixture(t)
			dir, ref := t.TempDir(), t.TempDir()
			for _, d := range []string{dir, ref} {
				run(t, d, "qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "1M")
				qemuIO(t, filepath.Join(d, "base.qcow2"), "write -P 0x11 0 1M")
				args := append([]string{"create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2"}, tc.create...)
				run(t, d, "qemu-img", append(args, "ov.qcow2", itoa(tc.size))...)
				if tc.write > 0 {
					qemuIO(t, filepath.Join(d, "ov.qcow2"), "write -P 0x22 0 "+itoa(tc.write))
				}
			}
			before := qemuRaw(t, dir, "ov.qcow2")
			o := qcow2Options(filepath.Join(dir, "ov.qcow2"))
			o["read-only"] = false
			n, err := g.Add(o)
			if err != nil {
				t.Fatal(err)
			}
			w, err := g.Attach("", n, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tc.sizes {
				err := n.Truncate(s)
				if last := i == len(tc.sizes)-1; tc.wantErr && last {
					if !errors.Is(err, block.ErrNotSupported) {
						t.Fatalf("Truncate(%d) = %v, want Failed to zero out new clusters", s, err)
					}
					if n.Length() != tc.size {
						t.Fatalf("length %d after a failed grow, want %d", n.Length(), tc.size)
					}
				} else if err != nil {
					t.Fatalf("Truncate(%d): %v", s, err)
				}
				if !tc.wantErr {
					run(t, ref, "qemu-img", "resize", "-q", "--shrink", "ov.qcow2", itoa(s))
				}
			}
			ours := readAll(t, n)
			g.Detach(w)
			if err := g.Delete(n.Name()); err != nil {
				t.Fatal(err)
			}
			want := qemuRaw(t, ref, "ov.qcow2")
			if tc.wantErr {
				want = before
			}
			if !bytes.Equal(ours, want) {
				i := firstDiff(ours, want)
				t.Errorf("node reads differ from qemu-img resize's at %d", i)
			}
			if got := qemuRaw(t, dir, "ov.qcow2"); !bytes.Equal(got, want) {
				t.Errorf("qemu reads the image differently from qemu-img resize's at %d", firstDiff(got, want))
			}
			out := run(t, dir, "qemu-img", "check", "ov.qcow2")
			if !bytes.Contains(out, []byte("No errors were found")) {
				t.Errorf("check: %s", out)
			}
		})
	}
}
