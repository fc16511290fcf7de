package qcow2

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
)

// snapshotContents reads every internal snapshot of img as QEMU does.
func snapshotContents(t *testing.T, dir, img string, names []string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	for _, name := range names {
		out := filepath.Join(t.TempDir(), name+".raw")
		run(t, dir, "qemu-img", "convert", "-l", "snapshot.name="+name, "-O", "raw", img, out)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		m[name] = b
	}
	return m
}

// snapshotList is qemu-img snapshot -l without the column that changes
// nothing of interest (none do: the table must stay byte-identical).
func snapshotList(t *testing.T, dir, img string) string {
	t.Helper()
	return string(run(t, dir, "qemu-img", "snapshot", "-l", img))
}

// TestWriteSnapshots: random writes, zero writes and discards on images
// with internal snapshots leave qemu-img check clean (COPIED flags exact,
// no leaks), the active image equal to a shadow, and every snapshot as it
// was, also when QEMU reverts to it.
func TestWriteSnapshots(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	for _, tc := range []struct {
		name    string
		opts    string
		size    int64
		cs      int64
		snaps   int
		backing bool
		dr      discardRule
	}{
		{name: "v3 64k one snapshot", opts: "cluster_size=65536", size: 16 << 20, cs: 65536, snaps: 1},
		{name: "v3 4k two snapshots", opts: "cluster_size=4096", size: 8 << 20, cs: 4096, snaps: 2},
		{name: "v2 4k two snapshots", opts: "cluster_size=4096,compat=0.10", size: 8 << 20, cs: 4096, snaps: 2},
		{name: "v3 512 rc2", opts: "cluster_size=512,refcount_bits=2", size: 2 << 20, cs: 512, snaps: 1},
		{name: "extended L2 backing", opts: "cluster_size=65536,extended_l2=on", size: 16 << 20, cs: 65536, snaps: 2, backing: true,
			dr: discardRule{grain: 2048}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := filepath.Join(dir, "snap.qcow2")
			args := []string{"create", "-q", "-f", "qcow2", "-o", tc.opts}
			if tc.backing {
				base := bytes.Repeat([]byte("base"), int(tc.size/8))
				os.WriteFile(filepath.Join(dir, "base.raw"), base, 0o600)
				args = append(args, "-b", "base.raw", "-F", "raw")
			}
			run(t, dir, "qemu-img", append(args, img, itoa(tc.size))...)
			var names []string
			for i := range tc.snaps {
				qemuIO(t, img, writes(tc.size)[i*3:i*3+3]...)
				qemuIO(t, img, fmt.Sprintf("write -P %d %d %d", 0x70+i, tc.size/3, tc.size/5))
				names = append(names, fmt.Sprintf("snap-%d", i))
				run(t, dir, "qemu-img", "snapshot", "-c", names[i], img)
			}
			qemuIO(t, img, writes(tc.size)[6:]...)
			before, list := snapshotContents(t, dir, img, names), snapshotList(t, dir, img)
			shadow := qemuRaw(t, dir, img)

			g := parallelFixture(t)
			n, b := openRW(t, g, img)
			workload(t, n, shadow, tc.cs, 300, uint64(len(tc.name)), tc.dr)
			if got := readAll(t, n); !bytes.Equal(got, shadow) {
				t.Fatalf("read back differs at %d", firstDiff(got, shadow))
			}
			g.Detach(b)
			g.Delete(n.Name())

			qemuCheck(t, img, false)
			raw := filepath.Join(dir, "shadow.raw")
			os.WriteFile(raw, shadow, 0o600)
			qemuCompare(t, img, raw)
			if after := snapshotList(t, dir, img); after != list {
				t.Errorf("snapshot list changed:\n%s\nnow:\n%s", list, after)
			}
			after := snapshotContents(t, dir, img, names)
			for _, name := range names {
				if !bytes.Equal(after[name], before[name]) {
					t.Errorf("snapshot %s changed at byte %d", name, firstDiff(after[name], before[name]))
				}
			}
			// Reverting (on a copy) gives the snapshot back, check-clean.
			cp := filepath.Join(dir, "copy.qcow2")
			data, _ := os.ReadFile(img)
			os.WriteFile(cp, data, 0o600)
			run(t, dir, "qemu-img", "snapshot", "-a", names[0], cp)
			qemuCheck(t, cp, false)
			if got := qemuRaw(t, dir, cp); !bytes.Equal(got, before[names[0]]) {
				t.Errorf("reverted to %s: differs at byte %d", names[0], firstDiff(got, before[names[0]]))
			}
		})
	}
}

// TestWriteSnapshotOverlap: an L2 entry pointing into a snapshot's L1
// or L2 table or the snapshot table is refused as a write on metadata.
func TestWriteSnapshotOverlap(t *testing.T) {
	needQemu(t)
	for _, target := range []string{"inactive L1 table", "inactive L2 table", "snapshot table"} {
		t.Run(target, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "ov.qcow2")
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", img, "4M")
			qemuIO(t, img, "write -P 0x11 0 64k")
			run(t, dir, "qemu-img", "snapshot", "-c", "s", img)
			g := fixture(t)
			n, q, err := openCapture(g, img, block_rw())
			if err != nil {
				t.Fatal(err)
			}
			var off int64
			switch target {
			case "snapshot table":
				off = int64(q.hdr.SnapshotsOffset)
			case "inactive L2 table": // shared with the snapshot
				off = int64(q.l1[0] & offsetMask)
			default:
				off = int64(q.snapshots[0].L1TableOffset)
			}
			g.Delete(n.Name())
			// Point the active L2 entry of cluster 1 there, COPIED.
			l2 := int64(q.l1[0] & offsetMask)
			f, _ := os.OpenFile(img, os.O_RDWR, 0)
			var b8 [8]byte
			putBE64(b8[:], uint64(off)|flagCopied)
			f.WriteAt(b8[:], l2+8)
			f.Close()

			g2 := fixture(t)
			n2, b := openRW(t, g2, img)
			_, err = n2.WriteAt(make([]byte, 512), 65536)
			if err == nil || !strings.Contains(err.Error(), "overlaps with "+target) || !errorsIsEIO(err) {
				t.Fatalf("write over the %s: %v", target, err)
			}
			g2.Detach(b)
			g2.Delete(n2.Name())
		})
	}
}

func putBE64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}
