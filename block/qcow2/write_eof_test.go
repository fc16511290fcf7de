package qcow2

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"minivmm/internal/fdtest"
)

// TestWriteQemuFileEndsInCluster: QEMU allocates only the subclusters a
// write touches, so its file can end inside the last data cluster.
// Writing (and reading) past the end of the file inside that cluster is
// legal, in place and through the exclusive path, and the result is what
// qemu-io reads.
func TestWriteQemuFileEndsInCluster(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	for _, cs := range []int64{16 << 10, 64 << 10, 2 << 20} {
		t.Run(itoa(cs), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := filepath.Join(dir, "f.qcow2")
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size="+itoa(cs), img, "64M")
			qemuIO(t, img, "write -P 1 0 512")
			fi, err := os.Stat(img)
			if err != nil {
				t.Fatal(err)
			}
			dataEnd := fi.Size()
			if dataEnd%cs == 0 {
				t.Fatalf("QEMU padded the last cluster (file %d bytes): the test needs it not to", dataEnd)
			}
			g := parallelFixture(t)
			n, b := openRW(t, g, img)
			got := make([]byte, 4096)
			if _, err := n.ReadAt(got, cs-4096); err != nil || !bytes.Equal(got, make([]byte, 4096)) {
				t.Fatalf("read past the end of the file: %v", err)
			}
			if _, err := n.WriteAt(bytes.Repeat([]byte{2}, 4096), cs/2); err != nil {
				t.Fatalf("write past the end of the file, inside the cluster: %v", err)
			}
			if _, err := n.WriteAt(bytes.Repeat([]byte{3}, 512), 512); err != nil {
				t.Fatalf("write into the allocated subcluster: %v", err)
			}
			g.Detach(b)
			if err := g.Delete(n.Name()); err != nil {
				t.Fatal(err)
			}
			qemuCheck(t, img, false)
			qemuIO(t, img, "read -P 1 0 512", "read -P 3 512 512", "read -P 0 1024 "+itoa(cs/2-1024),
				"read -P 2 "+itoa(cs/2)+" 4096", "read -P 0 "+itoa(cs/2+4096)+" "+itoa(cs/2-4096))
		})
	}
}
