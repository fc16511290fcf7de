package monitor

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/faultdisk"
	"minivmm/block/qcow2"
	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
	"minivmm/qemuopen"
)

// lazyImage is a fresh lazy_refcounts qcow2 image's bytes.
func lazyImage(t *testing.T) []byte {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "lazy.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := qcow2.Create(qcow2.FdTarget(int(f.Fd())), qcow2.CreateOptions{Size: 64 << 20, LazyRefcounts: true}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBlockIOErrorOnWriteBack: a lazy_refcounts image whose disk fails
// every write and flush once data sits in it cannot write back its
// refcounts, L2 tables and clean header. The last writer leaving hears of
// it (Detach's error), blockdev-del still answers {} as QEMU's does, and
// each failure reaches clients as QEMU's BLOCK_IO_ERROR; the image on disk
// keeps its dirty bit.
func TestBlockIOErrorOnWriteBack(t *testing.T) {
	fdtest.Check(t)
	for _, tc := range []struct {
		errno   unix.Errno
		nospace bool
		reason  string
	}{
		{unix.EIO, false, "Input/output error"},
		{unix.ENOSPC, true, "No space left on device"},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			reg := qemuopen.New(qemuopen.Config{})
			defer reg.CloseAll()
			g := block.NewGraph(reg)
			defer g.Close()
			d := faultdisk.Load(lazyImage(t))
			if err := d.Install(g, "fault"); err != nil {
				t.Fatal(err)
			}
			srv := NewServer(reg, g, NewVM(false))
			defer srv.Close()
			sock := filepath.Join(t.TempDir(), "qmp.sock")
			if _, err := srv.Listen(sock, false); err != nil {
				t.Fatal(err)
			}
			c := qmptest.Dial(t, sock)
			defer c.Close()
			c.Negotiate()

			n, err := g.Add(block.Options{"driver": "qcow2", "node-name": "disk", "read-only": false,
				"file": block.Options{"driver": "fault"}})
			if err != nil {
				t.Fatal(err)
			}
			b, err := g.Attach("drive0", n, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := n.WriteAt(bytes.Repeat([]byte{0x5a}, 64<<10), 1<<20); err != nil {
				t.Fatal(err)
			}
			if hdr := d.Bytes(); hdr[79]&1 == 0 {
				t.Fatal("a lazy_refcounts image written to is not marked dirty")
			}
			rule := d.AddRule(&faultdisk.Rule{Kinds: faultdisk.Writes | faultdisk.Flush, Err: tc.errno})

			want := func(device string) {
				t.Helper()
				ev := c.Event("BLOCK_IO_ERROR", 5*time.Second)
				data, _ := ev["data"].(map[string]any)
				wantData := map[string]any{"device": device, "node-name": "disk", "operation": "write",
					"action": "report", "reason": tc.reason}
				if tc.nospace {
					wantData["nospace"] = true
				}
				if !reflect.DeepEqual(data, wantData) {
					t.Errorf("BLOCK_IO_ERROR data = %v, want %v", data, wantData)
				}
			}
			// The last writer leaving: write-back fails, the caller hears.
			if err := g.Detach(b); err == nil || !errors.Is(err, tc.errno) {
				t.Errorf("Detach = %v, want %v", err, tc.errno)
			}
			want("drive0")
			// blockdev-del: QEMU's reply. Closing retries the write-back,
			// without the write permission the file child gave back: that
			// is no news (TestBlockIOErrorOnDelete covers a close that
			// fails first).
			if r := c.Execute("blockdev-del", map[string]any{"node-name": "disk"}); !reflect.DeepEqual(r, map[string]any{"return": map[string]any{}}) {
				t.Errorf("blockdev-del = %v", r)
			}
			if _, ok := g.Node("disk"); ok {
				t.Error("node still in the graph after blockdev-del")
			}
			if rule.Fired() == 0 {
				t.Error("the fault rule never fired")
			}
			if hdr := d.Bytes(); hdr[79]&1 == 0 {
				t.Error("image marked clean though its write-back failed")
			}
		})
	}
}

// closeFails is a format whose close fails with err, as a format's
// write-back at close can.
type closeFails struct {
	file *block.Node
	err  error
}

func (f *closeFails) ReadAt(p []byte, off int64) (int, error)  { return f.file.ReadAt(p, off) }
func (f *closeFails) WriteAt(p []byte, off int64) (int, error) { return f.file.WriteAt(p, off) }
func (f *closeFails) Flush() error                             { return f.file.Flush() }
func (f *closeFails) Length() (int64, error)                   { return f.file.Length(), nil }
func (f *closeFails) Close() error                             { return f.err }

// TestBlockIOErrorOnDelete: blockdev-del of a node whose close fails
// answers {} (QEMU's blockdev-del cannot fail there either) and sends
// BLOCK_IO_ERROR, which it used to drop.
func TestBlockIOErrorOnDelete(t *testing.T) {
	fdtest.Check(t)
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	g := block.NewGraph(reg)
	defer g.Close()
	err := g.AddDriver(&block.Driver{Name: "closefail", Format: true, Open: func(o *block.OpenContext) (block.Image, error) {
		return &closeFails{file: o.Child("file"), err: fmt.Errorf("qcow2: could not write the header: %w", unix.ENOSPC)}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(reg, g, NewVM(false))
	defer srv.Close()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	if _, err := srv.Listen(sock, false); err != nil {
		t.Fatal(err)
	}
	c := qmptest.Dial(t, sock)
	defer c.Close()
	c.Negotiate()
	if _, err := g.Add(block.Options{"driver": "closefail", "node-name": "x", "file": block.Options{"driver": "null-co", "size": 1024}}); err != nil {
		t.Fatal(err)
	}
	if r := c.Execute("blockdev-del", map[string]any{"node-name": "x"}); !reflect.DeepEqual(r, map[string]any{"return": map[string]any{}}) {
		t.Errorf("blockdev-del = %v", r)
	}
	ev := c.Event("BLOCK_IO_ERROR", 5*time.Second)
	want := map[string]any{"device": "", "node-name": "x", "operation": "write", "action": "report",
		"nospace": true, "reason": "No space left on device"}
	if !reflect.DeepEqual(ev["data"], want) {
		t.Errorf("BLOCK_IO_ERROR data = %v, want %v", ev["data"], want)
	}
	if _, ok := g.Node("x"); ok {
		t.Error("node still in the graph after blockdev-del")
	}
}
