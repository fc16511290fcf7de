package block_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/qcow2"
)

// qcow2Image creates a qcow2 image of size bytes (over backing, if not
// "") in a new directory.
func qcow2Image(t *testing.T, size uint64, backing string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img.qcow2")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o := qcow2.CreateOptions{Size: size, BackingFile: backing}
	if backing != "" {
		o.BackingFormat = "qcow2"
	}
	if err := qcow2.Create(f, o); err != nil {
		t.Fatal(err)
	}
	return p
}

// filled is a raw image of 4096 bytes of b.
func filled(t *testing.T, b byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, bytes.Repeat([]byte{b}, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustAdd(t *testing.T, g *block.Graph, o block.Options) *block.Node {
	t.Helper()
	n, err := g.AddRoot(o)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func readByte(t *testing.T, n *block.Node, off int64) byte {
	t.Helper()
	b := make([]byte, 512)
	if _, err := n.ReadAt(b, off); err != nil {
		t.Fatalf("read %s at %d: %v", n.Name(), off, err)
	}
	return b[0]
}

// TestReopenSwapsFileChild: a raw node reopened over another file node
// reads through it, even once the old one is deleted and its fd number
// reused by a third image (it used to read EBADF, then the third image).
func TestReopenSwapsFileChild(t *testing.T) {
	g, _ := fixture(t)
	mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f","filename":%q}`, filled(t, 'A')))
	mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f2","filename":%q}`, filled(t, 'B')))
	r := mustAdd(t, g, opts(t, `{"driver":"raw","node-name":"r","file":"f"}`))
	if err := g.Reopen([]block.Options{opts(t, `{"driver":"raw","node-name":"r","file":"f2"}`)}); err != nil {
		t.Fatal(err)
	}
	if c := r.Child("file"); c == nil || c.Name() != "f2" {
		t.Fatalf("file child after reopen: %v", c)
	}
	if got := readByte(t, r, 0); got != 'B' {
		t.Fatalf("read %q through the new file child, want 'B'", got)
	}
	if err := g.Delete("f"); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f3","filename":%q}`, filled(t, 'C')))
	if got := readByte(t, r, 0); got != 'B' {
		t.Fatalf("after f was deleted and another image opened, r reads %q, want 'B'", got)
	}
}

// TestClosedNodeFailsIO: a node kept by a caller after blockdev-del fails
// its requests with ErrClosed, even once its fd number belongs to another
// image.
func TestClosedNodeFailsIO(t *testing.T) {
	g, _ := fixture(t)
	f := mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f","filename":%q}`, filled(t, 'A')))
	if err := g.Delete("f"); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f3","filename":%q}`, filled(t, 'C')))
	b := make([]byte, 512)
	_, err := f.ReadAt(b, 0)
	if !errors.Is(err, block.ErrClosed) || !errors.Is(err, unix.ENOMEDIUM) {
		t.Fatalf("read of a deleted node: %v (data %q), want ErrClosed", err, b[:1])
	}
	if err := f.Flush(); !errors.Is(err, block.ErrClosed) {
		t.Fatalf("flush of a deleted node: %v", err)
	}
	if info := f.Info(); info.ActualSize != -1 {
		t.Fatalf("a deleted node reports an actual size (%d): its fd number is another image's", info.ActualSize)
	}
}

// TestReopenQcow2Children: qcow2's file and backing children change in a
// reopen as in QEMU 7.2 (transcript in the commit that added this test),
// and a reopen that leaves backing out works where the node has none
// (it used to panic).
func TestReopenQcow2Children(t *testing.T) {
	g, _ := fixture(t)
	base := qcow2Image(t, 1<<20, "")
	other := qcow2Image(t, 1<<20, "")
	top := qcow2Image(t, 1<<20, base)
	// Put 'b' in the base and 'o' in the other image at 0.
	for path, c := range map[string]byte{base: 'b', other: 'o'} {
		n, err := g.Add(opts(t, `{"driver":"qcow2","file":{"driver":"file","filename":%q}}`, path))
		if err != nil {
			t.Fatal(err)
		}
		bk, err := g.Attach("", n, block.Perm{Write: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.WriteAt(bytes.Repeat([]byte{c}, 512), 0); err != nil {
			t.Fatal(err)
		}
		g.Detach(bk)
		if err := g.Delete(n.Name()); err != nil {
			t.Fatal(err)
		}
	}

	mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f","filename":%q}`, other))
	mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"qc0","file":"f"}`))
	// Issue 13: backing left out of a qcow2 without one is a no-op.
	if err := g.Reopen([]block.Options{opts(t, `{"driver":"qcow2","node-name":"qc0","file":"f","read-only":true}`)}); err != nil {
		t.Fatalf("reopen of a qcow2 node leaving out backing: %v", err)
	}

	topN := mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":%q}}`, top))
	if got := readByte(t, topN, 0); got != 'b' {
		t.Fatalf("top reads %q through its backing file, want 'b'", got)
	}
	for _, tc := range []struct{ opts, want string }{
		{`{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":%q}}`, "backing is missing for 'top'"},
		{`{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":%q},"backing":"nope"}`, "Cannot find device='' nor node-name='nope'"},
		{`{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":%q},"backing":"top"}`, "Making 'top' a backing child of 'top' would create a cycle"},
	} {
		err := g.Reopen([]block.Options{opts(t, tc.opts, top)})
		if err == nil || err.Error() != tc.want {
			t.Errorf("reopen %s: %v, want %q", tc.opts, err, tc.want)
		}
	}
	// A new backing node: top reads through qc0 ('o').
	if err := g.Reopen([]block.Options{opts(t, `{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":%q},"backing":"qc0"}`, top)}); err != nil {
		t.Fatal(err)
	}
	if got := readByte(t, topN, 0); got != 'o' {
		t.Fatalf("top reads %q through its new backing node, want 'o'", got)
	}
	if err := g.Reopen([]block.Options{opts(t, `{"driver":"qcow2","node-name":"qc0","file":"f","read-only":true,"backing":"top"}`)}); err == nil ||
		err.Error() != "Making 'top' a backing child of 'qc0' would create a cycle" {
		t.Errorf("cycle through another node: %v", err)
	}
	if err := g.Delete("qc0"); err == nil {
		t.Fatal("a backing node in use was deleted")
	}
	// "backing": null: unallocated clusters read as zeroes.
	if err := g.Reopen([]block.Options{opts(t, `{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":%q},"backing":null}`, top)}); err != nil {
		t.Fatal(err)
	}
	if got := readByte(t, topN, 0); got != 0 {
		t.Fatalf("top without backing reads %q, want zeroes", got)
	}
	if err := g.Delete("qc0"); err != nil {
		t.Fatalf("qc0 no longer in use: %v", err)
	}
	// The header still names a backing file: it must be given.
	err := g.Reopen([]block.Options{opts(t, `{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":%q}}`, top)})
	if err == nil || err.Error() != "backing is missing for 'top'" {
		t.Fatalf("reopen without backing of an image naming one: %v", err)
	}
}

// TestReopenFileChildChecks: QEMU's refusals of a new file child.
func TestReopenFileChildChecks(t *testing.T) {
	g, _ := fixture(t)
	p := image(t, 4096)
	mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f","filename":%q}`, p))
	mustAdd(t, g, opts(t, `{"driver":"file","node-name":"fro","filename":%q,"read-only":true}`, p))
	mustAdd(t, g, opts(t, `{"driver":"raw","node-name":"r","file":"f"}`))
	mustAdd(t, g, opts(t, `{"driver":"writeback-test","node-name":"w","file":"f"}`))
	for _, tc := range []struct{ opts, want string }{
		{`{"driver":"raw","node-name":"r","file":"fro"}`, "Block node is read-only"},
		{`{"driver":"raw","node-name":"r","file":"nope"}`, "Cannot find device='' nor node-name='nope'"},
		{`{"driver":"raw","node-name":"r","file":"r"}`, "Making 'r' a file child of 'r' would create a cycle"},
		{`{"driver":"writeback-test","node-name":"w","file":"fro","read-only":true}`, "Cannot change the option 'file'"},
	} {
		err := g.Reopen([]block.Options{opts(t, "%s", tc.opts)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("reopen %s: %v, want %q", tc.opts, err, tc.want)
		}
	}
	// Read-only over a read-only file: accepted.
	if err := g.Reopen([]block.Options{opts(t, `{"driver":"raw","node-name":"r","file":"fro","read-only":true}`)}); err != nil {
		t.Fatal(err)
	}
}

// TestReopenCycleAcrossEntries: two entries that are each acyclic against
// the graph as it is, but together make a cycle, are refused.
func TestReopenCycleAcrossEntries(t *testing.T) {
	g, _ := fixture(t)
	for _, n := range []string{"a", "b"} {
		mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f%s","filename":%q}`, n, qcow2Image(t, 1<<20, "")))
		mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"%s","file":"f%s"}`, n, n))
	}
	err := g.Reopen([]block.Options{
		opts(t, `{"driver":"qcow2","node-name":"a","file":"fa","backing":"b"}`),
		opts(t, `{"driver":"qcow2","node-name":"b","file":"fb","backing":"a"}`),
	})
	if err == nil || !strings.Contains(err.Error(), "would create a cycle") {
		t.Fatalf("a cycle made by two entries: %v", err)
	}
	if c := g.Nodes(); len(c) != 4 {
		t.Fatal("nodes changed")
	}
	if n, _ := g.Node("a"); n.Child("backing") != nil {
		t.Fatal("the refused transaction changed a's backing")
	}
}

// TestBackingDepth: each node of a three-image chain opened from the
// headers reports the images below it, as QEMU 7.2's backing_file_depth
// does (top 2, middle 1, base 0, file nodes 0); it used to be 0 for all.
func TestBackingDepth(t *testing.T) {
	g, _ := fixture(t)
	dir := t.TempDir()
	for _, img := range []struct{ name, backing string }{{"base.qcow2", ""}, {"mid.qcow2", "base.qcow2"}, {"top.qcow2", "mid.qcow2"}} {
		f, err := os.Create(filepath.Join(dir, img.name))
		if err != nil {
			t.Fatal(err)
		}
		o := qcow2.CreateOptions{Size: 1 << 20, BackingFile: img.backing}
		if img.backing != "" {
			o.BackingFormat = "qcow2"
		}
		err = qcow2.Create(f, o)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":%q}}`, filepath.Join(dir, "top.qcow2")))
	want := map[string]int{"top.qcow2": 2, "mid.qcow2": 1, "base.qcow2": 0}
	seen := 0
	for _, n := range g.Nodes() {
		info := n.Info()
		d := 0
		if info.Driver == "qcow2" {
			d = want[filepath.Base(info.Filename)]
			seen++
		}
		if info.BackingDepth != d {
			t.Errorf("%s (%s %s): backing depth %d, want %d", info.Name, info.Driver, info.Filename, info.BackingDepth, d)
		}
	}
	if seen != 3 {
		t.Fatalf("%d qcow2 nodes, want 3", seen)
	}
}

// TestReopenFileChildWhileWritten: a node being written may get another
// file child, as in QEMU; its writers move to the new child (which must
// take them) and leave the old one, which can then go read-only.
func TestReopenFileChildWhileWritten(t *testing.T) {
	g, _ := fixture(t)
	p1, p2 := filled(t, 'A'), filled(t, 'B')
	mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f","filename":%q}`, p1))
	mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f2","filename":%q}`, p2))
	mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f3","filename":%q}`, p2))
	r := mustAdd(t, g, opts(t, `{"driver":"raw","node-name":"r","file":"f"}`))
	other := mustAdd(t, g, opts(t, `{"driver":"raw","node-name":"o","file":"f3"}`))
	b, err := g.Attach("", r, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	ob, err := g.Attach("", other, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	// f3 is written by another user that does not share: refused, and
	// nothing moved.
	err = g.Reopen([]block.Options{opts(t, `{"driver":"raw","node-name":"r","file":"f3"}`)})
	if err == nil || !strings.Contains(err.Error(), "Conflicts with another writer") {
		t.Fatalf("new file child written by another: %v", err)
	}
	g.Detach(ob)
	if err := g.Reopen([]block.Options{opts(t, `{"driver":"file","node-name":"f","filename":%q,"read-only":true}`, p1)}); err == nil {
		t.Fatal("f made read-only while r writes through it")
	}
	if err := g.Reopen([]block.Options{opts(t, `{"driver":"raw","node-name":"r","file":"f2"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.WriteAt(bytes.Repeat([]byte{'W'}, 512), 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p2); got[0] != 'W' {
		t.Fatalf("the write went elsewhere than the new file child (%q)", got[0])
	}
	if err := g.Reopen([]block.Options{opts(t, `{"driver":"file","node-name":"f","filename":%q,"read-only":true}`, p1)}); err != nil {
		t.Fatalf("the old file child kept r's writer: %v", err)
	}
	if err := g.Reopen([]block.Options{opts(t, `{"driver":"file","node-name":"f2","filename":%q,"read-only":true}`, p2)}); err == nil {
		t.Fatal("f2 made read-only while r writes through it")
	}
	g.Detach(b)
	if err := g.Reopen([]block.Options{opts(t, `{"driver":"file","node-name":"f2","filename":%q,"read-only":true}`, p2)}); err != nil {
		t.Fatalf("writer left, f2 still refuses read-only: %v", err)
	}
}
