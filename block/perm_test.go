package block_test

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/internal/fdtest"
)

// heldBytes lists the lock bytes anyone holds on path.
func heldBytes(t *testing.T, path string) []int64 {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var held []int64
	for _, off := range []int64{100, 101, 102, 103, 200, 201, 202, 203} {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: unix.SEEK_SET, Start: off, Len: 1}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
			t.Fatal(err)
		}
		if lk.Type != unix.F_UNLCK {
			held = append(held, off)
		}
	}
	return held
}

func wantPerms(t *testing.T, g *block.Graph, name string, perm, shared block.Perms) {
	t.Helper()
	n, ok := g.Node(name)
	if !ok {
		t.Fatalf("no node %s", name)
	}
	if p, s := n.Perms(); p != perm || s != shared {
		t.Errorf("%s needs %q, shares %q; want %q, %q", name, p, s, perm, shared)
	}
}

// Operations that would conflict are refused in QEMU's words (the texts
// are qemu-system-x86_64's, see TestPermConformance in cmd/minivmm) and
// change nothing: nodes, users, permissions, locks, fds.
func TestPermConflictsChangeNothing(t *testing.T) {
	const (
		cr = block.PermConsistentRead
		w  = block.PermWrite
		wu = block.PermWriteUnchanged
		rs = block.PermResize
	)
	g, _ := fixture(t)
	p := qcow2Image(t, 1<<20, "")
	mustAdd(t, g, opts(t, `{"driver":"file","node-name":"f","filename":%q}`, p))
	mustAdd(t, g, opts(t, `{"driver":"file","node-name":"fro","filename":%q,"read-only":true}`, p))
	wantPerms(t, g, "f", 0, block.PermAll)
	q := mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"q","file":"f"}`))
	wantPerms(t, g, "f", cr|w|rs, cr|wu)
	locks := heldBytes(t, p)
	if want := []int64{100, 101, 103, 201, 203}; !slices.Equal(locks, want) {
		t.Fatalf("locks %v, want %v", locks, want)
	}
	f, _ := g.Node("f")
	fds := fdtest.Open()
	for _, tc := range []struct {
		name string
		do   func() error
		want string
	}{
		{"a second qcow2 over f", func() error {
			_, err := g.Add(opts(t, `{"driver":"qcow2","node-name":"q2","file":"f"}`))
			return err
		}, "Permission conflict on node 'f': permissions 'write, resize' are both required by node 'q' (uses node 'f' as 'file' child) and unshared by node 'q2' (uses node 'f' as 'file' child)."},
		{"a read-write qcow2 over a read-only file", func() error {
			_, err := g.Add(opts(t, `{"driver":"qcow2","node-name":"q3","file":"fro"}`))
			return err
		}, "Block node is read-only"},
		{"a read-only qcow2 over another node on the image", func() error {
			_, err := g.Add(opts(t, `{"driver":"qcow2","node-name":"q4","read-only":true,"file":{"driver":"file","filename":%q}}`, p))
			return err
		}, `Failed to get shared "write" lock`},
		{"a writer on f under q", func() error {
			_, err := g.Attach("", f, block.Perm{Write: true})
			return err
		}, "Permission conflict on node 'f': permissions 'write' are both required by an unnamed block device (uses node 'f' as 'root' child) and unshared by node 'q' (uses node 'f' as 'file' child)."},
		{"a named writer on f under q", func() error {
			_, err := g.Attach("d0", f, block.Perm{Write: true})
			return err
		}, "Permission conflict on node 'f': permissions 'write' are both required by block device 'd0' (uses node 'f' as 'root' child) and unshared by node 'q' (uses node 'f' as 'file' child)."},
	} {
		err := tc.do()
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if got := len(g.Nodes()); got != 3 {
			t.Errorf("%s: %d nodes left, want 3", tc.name, got)
		}
		if _, ok := g.Backend("d0"); ok {
			t.Errorf("%s: backend d0 left", tc.name)
		}
		wantPerms(t, g, "f", cr|w|rs, cr|wu)
		if got := heldBytes(t, p); !slices.Equal(got, locks) {
			t.Errorf("%s: locks %v, were %v", tc.name, got, locks)
		}
		if got := fdtest.Open(); !slices.Equal(got, fds) {
			t.Errorf("%s: fds %v, were %v", tc.name, got, fds)
		}
	}
	// A writer of q itself is no conflict; it leaves, then q goes, and
	// with it every lock.
	b, err := g.Attach("", q, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	wantPerms(t, g, "q", cr|w, block.PermAll)
	g.Detach(b)
	wantPerms(t, g, "q", 0, block.PermAll)
	if err := g.Delete("q"); err != nil {
		t.Fatal(err)
	}
	wantPerms(t, g, "f", 0, block.PermAll)
	if got := heldBytes(t, p); got != nil {
		t.Errorf("locks %v after q went", got)
	}
}

// A writer coming to an auto-read-only raw node: raw passes its needs on,
// and they go with it.
func TestPermsFollowAutoReadOnlyWriter(t *testing.T) {
	g, _ := fixture(t)
	p := image(t, 1<<16)
	r := mustAdd(t, g, opts(t, `{"driver":"raw","node-name":"r","auto-read-only":true,"file":{"driver":"file","node-name":"f","filename":%q}}`, p))
	for range 2 {
		wantPerms(t, g, "f", 0, block.PermAll)
		b, err := g.Attach("", r, block.Perm{Write: true})
		if err != nil {
			t.Fatal(err)
		}
		wantPerms(t, g, "f", block.PermConsistentRead|block.PermWrite, block.PermAll)
		if got, want := heldBytes(t, p), []int64{100, 101}; !slices.Equal(got, want) {
			t.Errorf("locks %v with a writer, want %v", got, want)
		}
		g.Detach(b)
		if got := heldBytes(t, p); got != nil {
			t.Errorf("locks %v after the writer left", got)
		}
	}
}
