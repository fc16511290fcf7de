package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/faultdisk"
	"minivmm/block/qcow2"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// TestCloseGraphAtExit: what the images fail to write back as the VMM
// exits is printed, QEMU-style, and makes the exit status 1; a clean close
// prints nothing and leaves it 0.
func TestCloseGraphAtExit(t *testing.T) {
	fdtest.Check(t)
	f, err := os.Create(filepath.Join(t.TempDir(), "lazy.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := qcow2.Create(qcow2.FdTarget(int(f.Fd())), qcow2.CreateOptions{Size: 64 << 20, LazyRefcounts: true}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, tc := range []struct {
		name string
		rule *faultdisk.Rule
		code int
		out  string
	}{
		{"clean", nil, 0, ""},
		{"EIO", &faultdisk.Rule{Kinds: faultdisk.Writes | faultdisk.Flush, Err: unix.EIO}, 1,
			"minivmm: Failed to flush the L2 table cache: Input/output error\n" +
				"minivmm: Failed to flush the refcount block cache: Input/output error\n"},
		{"ENOSPC", &faultdisk.Rule{Kinds: faultdisk.Writes, Err: unix.ENOSPC}, 1,
			"minivmm: Failed to flush the L2 table cache: No space left on device\n" +
				"minivmm: Failed to flush the refcount block cache: No space left on device\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := qemuopen.New(qemuopen.Config{})
			defer reg.CloseAll()
			g := block.NewGraph(reg)
			d, err := faultdisk.LoadFile(f.Name())
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Install(g, "fault"); err != nil {
				t.Fatal(err)
			}
			n, err := g.Add(block.Options{"driver": "qcow2", "node-name": "disk", "read-only": false,
				"file": block.Options{"driver": "fault"}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := g.Attach("drive0", n, block.Perm{Write: true}); err != nil {
				t.Fatal(err)
			}
			if _, err := n.WriteAt(bytes.Repeat([]byte{1}, 4096), 1<<20); err != nil {
				t.Fatal(err)
			}
			if tc.rule != nil {
				d.AddRule(tc.rule)
			}
			var out strings.Builder
			code := closeGraph(g, &reporter{w: &out, now: time.Now})
			if code != tc.code || out.String() != tc.out {
				t.Errorf("exit %d, printed %q; want %d, %q", code, out.String(), tc.code, tc.out)
			}
			if dirty := d.Bytes()[79]&1 != 0; dirty != (tc.rule != nil) {
				t.Errorf("dirty bit %v after close", dirty)
			}
		})
	}
}
