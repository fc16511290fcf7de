package iotool

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/faultdisk"
	"minivmm/block/qcow2"
	"minivmm/internal/fdtest"
	"minivmm/internal/qtool"
)

// TestIOLazyRefcountsCloseFails: `minivmm io` writes a new data cluster
// into a lazy_refcounts qcow2 image whose disk then fails what only the
// close writes: the refcount block (held in memory until then), an fdatasync
// after it, the header write that clears the dirty bit. qemu-io prints
// its cache's line for the first two and nothing for the third, and
// exits 0; minivmm io prints the same lines (and the third failure as
// "Failed to close the image") and exits 1, and the
// image keeps its dirty bit. The disk is a fault-injecting driver the test
// installs through the tool's Setup hook; the tool runs as for users.
func TestIOLazyRefcountsCloseFails(t *testing.T) {
	fdtest.Check(t)
	path := filepath.Join(t.TempDir(), "lazy.qcow2")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	err = qcow2.Create(qcow2.FdTarget(int(f.Fd())), qcow2.CreateOptions{Size: 64 << 20, LazyRefcounts: true})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A first write allocates the L2 table the test's write goes
	// through: a new L2 table's refcount is written before the table is
	// used (QEMU's l2_allocate), lazy refcounts or not, so only a data
	// cluster's refcount waits for the close.
	{
		d := faultdisk.Load(img)
		prog := qtool.Program{Name: "minivmm io", Setup: func(g *block.Graph) error { return d.Install(g, "fault") }}
		var out, errOut strings.Builder
		if code := Run(prog, []string{"-c", "write -P 1 0 64k", "--image-opts", "driver=qcow2,file.driver=fault"},
			strings.NewReader(""), &out, &errOut); code != 0 {
			t.Fatalf("first write: exit %d: %s", code, errOut.String())
		}
		img = d.Bytes()
	}
	// The first refcount block: written again by nobody until the close.
	be := binary.BigEndian
	cluster := int64(1) << be.Uint32(img[20:])
	rb := int64(be.Uint64(img[be.Uint64(img[48:]):]))

	for _, tc := range []struct {
		name  string
		rules func(d *faultdisk.Disk) *faultdisk.Rule // the rule expected to fire
		want  string
	}{
		{"no fault", nil, ""},
		{"refcount block EIO", func(d *faultdisk.Disk) *faultdisk.Rule {
			return d.AddRule(&faultdisk.Rule{Kinds: faultdisk.Write, Off: rb, Len: cluster, Err: unix.EIO})
		}, "minivmm io: Failed to flush the refcount block cache: Input/output error\n"},
		{"refcount block ENOSPC", func(d *faultdisk.Disk) *faultdisk.Rule {
			return d.AddRule(&faultdisk.Rule{Kinds: faultdisk.Write, Off: rb, Len: cluster, Err: unix.ENOSPC})
		}, "minivmm io: Failed to flush the refcount block cache: No space left on device\n"},
		{"fdatasync after the refcounts EIO", func(d *faultdisk.Disk) *faultdisk.Rule {
			var closing atomic.Bool
			d.AddRule(&faultdisk.Rule{Kinds: faultdisk.Write, Off: rb, Len: cluster, Match: func(faultdisk.Request) bool {
				closing.Store(true) // observes, never fires
				return false
			}})
			return d.AddRule(&faultdisk.Rule{Kinds: faultdisk.Flush, Match: func(faultdisk.Request) bool { return closing.Load() }})
		}, "minivmm io: Failed to flush the L2 table cache: Input/output error\n" +
			"minivmm io: Failed to flush the refcount block cache: Input/output error\n"},
		{"clean header EIO", func(d *faultdisk.Disk) *faultdisk.Rule {
			// The first write of the dirty bit sets it; the second clears it.
			return d.AddRule(&faultdisk.Rule{Kinds: faultdisk.Write, Off: 72, Len: 8, After: 1, Err: unix.EIO})
		}, "minivmm io: Failed to close the image: Input/output error\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := faultdisk.Load(img)
			var rule *faultdisk.Rule
			if tc.rules != nil {
				rule = tc.rules(d)
			}
			prog := qtool.Program{Name: "minivmm io", Setup: func(g *block.Graph) error { return d.Install(g, "fault") }}
			var out, errOut strings.Builder
			code := Run(prog, []string{"-c", "write -P 7 1M 64k", "--image-opts", "driver=qcow2,file.driver=fault"},
				strings.NewReader(""), &out, &errOut)
			wantCode := 0
			if rule != nil {
				wantCode = 1
			}
			if code != wantCode || errOut.String() != tc.want || !strings.Contains(out.String(), "wrote 65536/65536 bytes at offset 1048576") {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q", code, out.String(), errOut.String(), wantCode, tc.want)
			}
			if dirty := d.Bytes()[79]&1 != 0; dirty != (rule != nil) {
				t.Errorf("dirty bit %v after close", dirty)
			}
			if rule != nil && rule.Fired() == 0 {
				t.Error("the fault rule never fired")
			}
		})
	}
}
