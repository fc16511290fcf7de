package file_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/internal/qmptest"
)

const (
	cr   = block.PermConsistentRead
	wr   = block.PermWrite
	wu   = block.PermWriteUnchanged
	rs   = block.PermResize
	all  = block.PermAll
	none = block.Perms(0)
)

// TestFileNodePermsMatchQEMU: what each file node needs and shares, as the
// graph computes it from its parents and users, and the lock bytes that
// makes it hold — against what QEMU 7.2 (qemu-system-x86_64) locks in the
// same graph. Nodes are given as blockdev-add arguments (%[1]s: the
// image, whose file node is "f"); a writer is a backend attached for
// writing in minivmm and, in QEMU, qemu-io opening the same graph
// (--image-opts) for writing: its BlockBackend (blk_new_open) needs
// consistent read and write and shares everything, as minivmm's does. (A
// -drive without a device holds consistent read only; an NBD export does
// not share resize.)
func TestFileNodePermsMatchQEMU(t *testing.T) {
	needQemu(t)
	const (
		fileRW  = `{"driver":"file","node-name":"f","filename":%[1]q}`
		fileRO  = `{"driver":"file","node-name":"f","filename":%[1]q,"read-only":true}`
		qcow2RW = `{"driver":"qcow2","node-name":"q","file":{"driver":"file","node-name":"f","filename":%[1]q}}`
		qcow2RO = `{"driver":"qcow2","node-name":"q","read-only":true,"file":{"driver":"file","node-name":"f","filename":%[1]q}}`
		// A format that is not read-only is writable, auto-read-only or
		// not (QEMU's bdrv_is_writable): it takes write on its file.
		qcow2Auto = `{"driver":"qcow2","node-name":"q","auto-read-only":true,"file":{"driver":"file","node-name":"f","filename":%[1]q}}`
		qcow2U    = `{"driver":"qcow2","node-name":"q","read-only":true,"force-share":true,"file":{"driver":"file","node-name":"f","filename":%[1]q}}`
		rawF      = `{"driver":"raw","node-name":"r","file":{"driver":"file","node-name":"f","filename":%[1]q}}`
		rawAuto   = `{"driver":"raw","node-name":"r","auto-read-only":true,"file":{"driver":"file","node-name":"f","filename":%[1]q}}`
	)
	for _, tc := range []struct {
		name    string
		node    string
		backing bool   // the image has a qcow2 backing file
		writer  string // "": no writer; else QEMU's -drive for the same graph with one
		detach  bool   // the writer leaves again (QEMU: the graph without it)
		perm    block.Perms
		shared  block.Perms
		bytes   []int64
		base    []int64 // the backing file's bytes
	}{
		{name: "lone file read-write", node: fileRW, perm: none, shared: all},
		{name: "lone file read-only", node: fileRO, perm: none, shared: all},
		{name: "qcow2 read-write", node: qcow2RW, perm: cr | wr | rs, shared: cr | wu, bytes: writerBytes},
		{name: "qcow2 read-write over an auto-read-only file", node: `{"driver":"qcow2","node-name":"q","file":{"driver":"file","node-name":"f","auto-read-only":true,"filename":%[1]q}}`,
			perm: cr | wr | rs, shared: cr | wu, bytes: writerBytes},
		{name: "auto-read-only qcow2 without a writer", node: qcow2Auto, perm: cr | wr | rs, shared: cr | wu, bytes: writerBytes},
		{name: "auto-read-only qcow2 with a writer", node: qcow2Auto,
			writer: "driver=qcow2,auto-read-only=on,file.driver=file,file.filename=%[1]s",
			perm:   cr | wr | rs, shared: cr | wu, bytes: writerBytes},
		{name: "qcow2 read-only", node: qcow2RO, perm: cr, shared: cr | wu, bytes: readerBytes},
		{name: "qcow2 force-share reader", node: qcow2U, perm: cr, shared: all, bytes: sharerBytes},
		{name: "raw without users", node: rawF, perm: none, shared: all},
		{name: "raw window without users", node: `{"driver":"raw","node-name":"r","offset":512,"file":{"driver":"file","node-name":"f","filename":%[1]q}}`,
			perm: none, shared: all &^ rs, bytes: []int64{203}},
		{name: "raw window with a writer", node: `{"driver":"raw","node-name":"r","offset":512,"file":{"driver":"file","node-name":"f","filename":%[1]q}}`,
			writer: "driver=raw,offset=512,file.driver=file,file.filename=%[1]s",
			perm:   cr | wr, shared: all &^ rs, bytes: []int64{100, 101, 203}},
		{name: "raw with a writer", node: rawF, writer: "driver=raw,file.driver=file,file.filename=%[1]s",
			perm: cr | wr, shared: all, bytes: rawWriterBytes},
		{name: "qcow2 over a backing chain", node: qcow2RW, backing: true, perm: cr | wr | rs, shared: cr | wu,
			bytes: writerBytes, base: readerBytes},
		{name: "auto-read-only raw: a writer arrives", node: rawAuto,
			writer: "driver=raw,auto-read-only=on,file.driver=file,file.filename=%[1]s",
			perm:   cr | wr, shared: all, bytes: rawWriterBytes},
		{name: "auto-read-only raw: the writer leaves", node: rawAuto, writer: "-", detach: true, perm: none, shared: all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			images := func(t *testing.T) (top, base string) {
				dir := t.TempDir()
				top = filepath.Join(dir, "top.qcow2")
				args := []string{"create", "-q", "-f", "qcow2", top, "1M"}
				if tc.backing {
					base = filepath.Join(dir, "base.qcow2")
					qemuRuns(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
					args = []string{"create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top}
				}
				qemuRuns(t, "qemu-img", args...)
				return top, base
			}
			check := func(t *testing.T, who, top, base string) {
				t.Helper()
				wantBytes(t, who+": the image", locked(t, top), tc.bytes)
				if base != "" {
					wantBytes(t, who+": the backing file", locked(t, base), tc.base)
				}
			}
			t.Run("qemu", func(t *testing.T) {
				top, base := images(t)
				if tc.writer != "" && !tc.detach {
					holdQEMUOpts(t, top, fmt.Sprintf(tc.writer, top))
					check(t, "qemu-io", top, base)
					return
				}
				sock, _ := qmptest.StartQEMU(t)
				c := qmptest.Dial(t, sock)
				c.Negotiate()
				var m map[string]any
				if err := json.Unmarshal([]byte(fmt.Sprintf(tc.node, top)), &m); err != nil {
					t.Fatal(err)
				}
				if reply := c.Execute("blockdev-add", m); reply["error"] != nil {
					t.Fatalf("blockdev-add: %v", reply["error"])
				}
				check(t, "qemu-system-x86_64", top, base)
			})
			t.Run("minivmm", func(t *testing.T) {
				g, _ := fixture(t)
				top, base := images(t)
				n, err := g.Add(plainOpts(t, tc.node, top))
				if err != nil {
					t.Fatal(err)
				}
				if tc.writer != "" {
					b, err := g.Attach("", n, block.Perm{Write: true})
					if err != nil {
						t.Fatal(err)
					}
					if tc.detach {
						g.Detach(b)
					}
				}
				f, _ := g.Node("f")
				if perm, shared := f.Perms(); perm != tc.perm || shared != tc.shared {
					t.Errorf("f needs %q and shares %q; want %q, %q", perm, shared, tc.perm, tc.shared)
				}
				check(t, "minivmm", top, base)
				g.Close()
				if got := locked(t, top); got != nil {
					t.Errorf("locks left after close: %v", got)
				}
			})
		})
	}
}

// holdQEMUOpts runs qemu-io --image-opts opts for writing, holding the
// image at path until the test ends.
func holdQEMUOpts(t *testing.T, path, opts string) {
	t.Helper()
	cmd := exec.Command("qemu-io", "--image-opts", opts)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); len(locked(t, path)) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("qemu-io --image-opts %s took no lock", opts)
		}
	}
}
