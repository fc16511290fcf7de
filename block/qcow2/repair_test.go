package qcow2

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/internal/fdtest"
)

// repairFixture creates a qcow2 image with data written through the
// driver, then breaks it with mutate (given the image and its bytes).
func repairFixture(t *testing.T, refcountBits int, mutate func(img *image, b []byte)) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "r.qcow2")
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	err = Create(FdTarget(fd), CreateOptions{Size: 4 << 20, ClusterSize: 4096, RefcountBits: refcountBits})
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	g := fixture(t)
	n, b := openRW(t, g, p)
	if _, err := n.WriteAt(bytes.Repeat([]byte{0x5a}, 3*4096), 8192); err != nil {
		t.Fatal(err)
	}
	g.Detach(b)
	g.Delete(n.Name())
	_, img, err := openCapture(g, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	mutate(img, data)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// repairRun runs Repair on path with a writable file node, then Check.
func repairRun(t *testing.T, path string, fix int) (*RepairResult, string, *CheckResult, error) {
	t.Helper()
	g := fixture(t)
	f, err := g.Add(block.Options{"driver": "file", "filename": path, "read-only": false, "locking": "off"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Attach("", f, block.Perm{Write: true}); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	rr, rerr := Repair(f, &log, fix)
	res, err := Check(f, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return rr, log.String(), res, rerr
}

// setRC sets the refcount of cluster k in the image bytes b of img (one
// refcount block covers the test images).
func setRC(img *image, b []byte, k int64, v uint64) {
	rb := int64(binaryU64(b, int64(img.hdr.RefcountTableOffset)) & reftOffsetMask)
	setRefcountAt(b[rb:rb+img.clusterSize], img.hdr.RefcountOrder, k, v)
}

func binaryU64(b []byte, off int64) uint64 {
	var v uint64
	for _, c := range b[off : off+8] {
		v = v<<8 | uint64(c)
	}
	return v
}

func dataCluster(img *image, b []byte) (l2 int64, e uint64) {
	l2 = int64(binaryU64(b, int64(img.hdr.L1TableOffset)) & offsetMask)
	return l2, binaryU64(b, l2+16) // guest cluster 2
}

func TestRepairLeaksAndErrors(t *testing.T) {
	fdtest.Check(t)
	for _, bits := range []int{1, 4, 16, 64} {
		// Leak: a refcount on an unused cluster (the file grown to hold it).
		p := repairFixture(t, bits, func(img *image, b []byte) { setRC(img, b, 100, 1) })
		os.Truncate(p, 101*4096)
		rr, log, res, err := repairRun(t, p, FixLeaks)
		if err != nil || rr.LeaksFixed != 1 || res.Leaks != 0 || res.Corruptions != 0 ||
			!strings.Contains(log, "Leaked cluster 100 refcount=1 reference=0\nRepairing cluster 100 refcount=1 reference=0\n") {
			t.Errorf("bits %d leak: %v %+v %+v\n%s", bits, err, rr, res, log)
		}
		// Corruption: a data cluster's refcount 2 when wide enough, then
		// COPIED is wrong too; -r leaks fixes the leak, -r all COPIED.
		if bits >= 4 {
			p = repairFixture(t, bits, func(img *image, b []byte) {
				_, e := dataCluster(img, b)
				setRC(img, b, int64(e&offsetMask)/4096, 2)
			})
			rr, log, res, err = repairRun(t, p, FixLeaks|FixErrors)
			if err != nil || rr.LeaksFixed != 1 || res.Leaks != 0 || res.Corruptions != 0 {
				t.Errorf("bits %d leak 2: %v %+v %+v\n%s", bits, err, rr, res, log)
			}
		}
		// COPIED cleared on a data cluster: an error; -r all sets it.
		p = repairFixture(t, bits, func(img *image, b []byte) {
			l2, e := dataCluster(img, b)
			copy(b[l2+16:], be64(e&^flagCopied))
		})
		rr, log, res, err = repairRun(t, p, FixLeaks|FixErrors)
		if err != nil || rr.CorruptionsFixed != 1 || res.Corruptions != 0 ||
			!strings.Contains(log, "Repairing OFLAG_COPIED data cluster") {
			t.Errorf("bits %d copied: %v %+v %+v\n%s", bits, err, rr, res, log)
		}
	}
}

// A referenced cluster with refcount 0 needs a rebuild under -r leaks
// (refused, nothing written); -r all raises the refcount.
func TestRepairZeroRefcount(t *testing.T) {
	fdtest.Check(t)
	var target int64
	mut := func(img *image, b []byte) {
		_, e := dataCluster(img, b)
		target = int64(e&offsetMask) / 4096
		setRC(img, b, target, 0)
	}
	p := repairFixture(t, 16, mut)
	before, _ := os.ReadFile(p)
	rr, log, res, err := repairRun(t, p, FixLeaks)
	after, _ := os.ReadFile(p)
	if err == nil || !strings.Contains(log, "ERROR need to rebuild refcount structures") || !bytes.Equal(before, after) || res.Corruptions == 0 {
		t.Errorf("-r leaks: %v %+v\n%s", err, rr, log)
	}
	rr, log, res, err = repairRun(t, p, FixLeaks|FixErrors)
	if err != nil || rr.CorruptionsFixed != 1 || res.Corruptions != 0 || res.Leaks != 0 {
		t.Errorf("-r all: %v %+v %+v\n%s", err, rr, res, log)
	}
}

// Pointers past the end stay corruptions; the repair writes nothing for
// them.
func TestRepairUnfixable(t *testing.T) {
	fdtest.Check(t)
	p := repairFixture(t, 16, func(img *image, b []byte) {
		l2, _ := dataCluster(img, b)
		copy(b[l2+8*10:], be64(flagCopied|1<<30))
	})
	_, log, res, err := repairRun(t, p, FixLeaks|FixErrors)
	if err != nil || res.Corruptions == 0 || !strings.Contains(log, "exceeding the end of the file") {
		t.Errorf("%v %+v\n%s", err, res, log)
	}
}
