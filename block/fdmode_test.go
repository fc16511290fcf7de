package block_test

import (
	"errors"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
)

// TestAutoReadOnlyFollowsPermissions: an auto-read-only file holds its
// fd read-write exactly while something takes write on it, as QEMU's
// file-posix does: a read-write qcow2 over it (whether or not anyone
// writes through the qcow2), not a read-only one; back to read-only when
// the format is made read-only or deleted; a set without an O_RDWR fd
// refuses the read-write format and changes nothing.
func TestAutoReadOnlyFollowsPermissions(t *testing.T) {
	needQEMUTools(t)
	g, reg := fixture(t)
	path := filepath.Join(t.TempDir(), "a.qcow2")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", path, "1M")
	addFds(t, reg, 1, path, unix.O_RDONLY)
	want := func(step string, modes ...string) {
		t.Helper()
		if got := heldModes(t, reg, path); !slices.Equal(got, modes) {
			t.Fatalf("%s: the file is held %v, want %v", step, got, modes)
		}
	}
	f := mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f","auto-read-only":true,"filename":"/dev/fdset/1"}`))
	want("a file node alone", "O_RDONLY")
	if _, err := g.Add(opts(t, `{"driver":"qcow2","node-name":"q","file":"f"}`)); !errors.Is(err, unix.EACCES) {
		t.Fatalf("a read-write qcow2 over a set without an O_RDWR fd: %v", err)
	}
	want("after the refusal", "O_RDONLY")
	addFds(t, reg, 1, path, unix.O_RDWR)
	mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"q","file":"f"}`))
	want("a read-write qcow2 over it", "O_RDWR")
	if p, _ := f.Perms(); p&block.PermWrite == 0 {
		t.Fatalf("the file's permissions %v lack write", p)
	}
	if err := g.Reopen([]block.Options{opts(t, `{"driver":"qcow2","node-name":"q","read-only":true,"file":"f"}`)}); err != nil {
		t.Fatal(err)
	}
	want("the qcow2 made read-only", "O_RDONLY")
	if err := g.Reopen([]block.Options{opts(t, `{"driver":"qcow2","node-name":"q","read-only":false,"file":"f"}`)}); err != nil {
		t.Fatal(err)
	}
	want("read-write again", "O_RDWR")
	q := mustNode(t, g, "q")
	b, err := g.Attach("d", q, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := g.Detach(b); err != nil {
		t.Fatal(err)
	}
	want("its writer gone, the qcow2 still read-write", "O_RDWR")
	if err := g.Delete("q"); err != nil {
		t.Fatal(err)
	}
	want("the qcow2 deleted", "O_RDONLY")
	if err := g.Delete("f"); err != nil {
		t.Fatal(err)
	}
	want("all deleted")
	if out := qemuTool(t, "qemu-img", "check", path); !containsLine(out, "No errors were found on the image.") {
		t.Fatalf("qemu-img check: %s", out)
	}
}

// TestFailingFlushDoesNotStickTheGraph: an auto-read-only node whose
// flush fails as its writer leaves stays read-write (safe), and later
// permission changes elsewhere in the graph still go through, instead of
// failing on the same flush each time.
func TestFailingFlushDoesNotStickTheGraph(t *testing.T) {
	name := "failflush-sticky-" + t.Name()
	block.Register(&block.Driver{Name: name, Format: true, Open: func(o *block.OpenContext) (block.Image, error) {
		return failingFlush{&probeImage{file: o.Child("file"), flushes: new(atomic.Int32)}}, nil
	}})
	g, _ := fixture(t)
	n := mustAdd(t, g, opts(t, `{"driver":%q,"node-name":"x","auto-read-only":true,"file":{"driver":"file","filename":%q}}`, name, image(t, 4096)))
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	g.Detach(b)
	other := mustAdd(t, g, opts(t, `{"driver":"file","node-name":"o","filename":%q}`, image(t, 4096)))
	r, err := g.Attach("", other, block.Perm{Write: true})
	if err != nil {
		t.Fatalf("an unrelated attach after a failed flush: %v", err)
	}
	g.Detach(r)
}
