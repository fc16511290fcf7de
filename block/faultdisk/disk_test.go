package faultdisk

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	_ "minivmm/block/file"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// graph is an empty graph closed at the end of the test.
func graph(t *testing.T) *block.Graph {
	t.Helper()
	fdtest.Check(t)
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	t.Cleanup(func() {
		g.Close()
		reg.CloseAll()
	})
	return g
}

// openDisk installs d in a new graph as "fault" and opens a writable node
// on it with a writer attached.
func openDisk(t *testing.T, d *Disk) *block.Node {
	t.Helper()
	g := graph(t)
	if err := d.Install(g, "fault"); err != nil {
		t.Fatal(err)
	}
	n, err := g.Add(block.Options{"driver": "fault", "node-name": "f", "discard": "unmap"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Attach("", n, block.Perm{Write: true}); err != nil {
		t.Fatal(err)
	}
	return n
}

type step struct {
	op      string // read, write, zero, discard, flush, truncate
	off, n  int64
	wantErr error
}

func (s step) run(n *block.Node) error {
	switch s.op {
	case "read":
		_, err := n.ReadAt(make([]byte, s.n), s.off)
		return err
	case "write":
		_, err := n.WriteAt(bytes.Repeat([]byte{0xab}, int(s.n)), s.off)
		return err
	case "zero":
		return n.WriteZeroes(s.off, s.n, false)
	case "discard":
		return n.Discard(s.off, s.n)
	case "flush":
		return n.Flush()
	case "truncate":
		return n.Truncate(s.n)
	}
	panic(s.op)
}

func TestRules(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rule  *Rule
		steps []step
		fired int64
	}{
		{name: "every read", rule: &Rule{Kinds: Read}, fired: 2, steps: []step{
			{op: "read", n: 512, wantErr: unix.EIO}, {op: "write", n: 512}, {op: "read", off: 4096, n: 512, wantErr: unix.EIO},
		}},
		{name: "third flush, once", rule: &Rule{Kinds: Flush, After: 2, Times: 1}, fired: 1, steps: []step{
			{op: "write", n: 512}, {op: "flush"},
			{op: "write", n: 512}, {op: "flush"},
			{op: "write", n: 512}, {op: "flush", wantErr: unix.EIO},
			{op: "write", n: 512}, {op: "flush"},
		}},
		{name: "range, ENOSPC", rule: &Rule{Kinds: Writes, Off: 8192, Len: 4096, Err: unix.ENOSPC}, fired: 2, steps: []step{
			{op: "write", off: 0, n: 8192},
			{op: "write", off: 8191, n: 1, wantErr: nil},
			{op: "write", off: 8191, n: 2, wantErr: unix.ENOSPC},
			{op: "zero", off: 12288, n: 4096},
			{op: "discard", off: 10000, n: 1, wantErr: unix.ENOSPC},
			{op: "read", off: 8192, n: 512},
		}},
		{name: "truncate past a size", rule: &Rule{Kinds: Truncate, Match: func(q Request) bool { return q.Off+q.Len > 1<<20 }}, fired: 1, steps: []step{
			{op: "truncate", n: 1 << 19}, {op: "truncate", n: 2 << 20, wantErr: unix.EIO}, {op: "truncate", n: 1 << 20},
		}},
		{name: "dropped write", rule: &Rule{Kinds: Write, Drop: true, Times: 1}, fired: 1, steps: []step{
			{op: "write", n: 512}, {op: "write", n: 512},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := New(64 << 10)
			r := d.AddRule(tc.rule)
			n := openDisk(t, d)
			for i, s := range tc.steps {
				err := s.run(n)
				if s.wantErr == nil && err != nil || s.wantErr != nil && !errors.Is(err, s.wantErr) {
					t.Fatalf("step %d (%s %d+%d): got %v, want %v", i, s.op, s.off, s.n, err, s.wantErr)
				}
				var be *block.Error
				if err != nil && (!errors.As(err, &be) || be.Node != "f") {
					t.Errorf("step %d: error %v does not name the node", i, err)
				}
			}
			if r.Fired() != tc.fired {
				t.Errorf("fired %d times, want %d", r.Fired(), tc.fired)
			}
		})
	}
}

func TestDroppedWriteStoresNothing(t *testing.T) {
	d := New(4096)
	d.AddRule(&Rule{Kinds: Write, Drop: true})
	n := openDisk(t, d)
	if _, err := n.WriteAt([]byte{1, 2, 3}, 0); err != nil {
		t.Fatal(err)
	}
	if !allZero(d.Bytes()) {
		t.Error("a dropped write reached the disk")
	}
}

// TestSpaceLimit: space is counted in blocks written, not in the file's
// length; holes give it back.
func TestSpaceLimit(t *testing.T) {
	d := New(0)
	d.SetSpaceLimit(16 << 10)
	n := openDisk(t, d)
	steps := []step{
		{op: "truncate", n: 1 << 20}, // sparse: free
		{op: "write", off: 0, n: 12 << 10},
		{op: "write", off: 12<<10 + 100, n: 100}, // one more block: the last
		{op: "write", off: 16 << 10, n: 1, wantErr: unix.ENOSPC},
		{op: "write", off: 0, n: 16 << 10},        // overwrite: no new space
		{op: "discard", off: 4 << 10, n: 4 << 10}, // gives a block back
		{op: "write", off: 40 << 10, n: 4 << 10},
		{op: "write", off: 48 << 10, n: 4 << 10, wantErr: unix.ENOSPC},
		{op: "truncate", n: 8 << 10}, // frees the blocks past the end
		{op: "truncate", n: 1 << 20},
		{op: "write", off: 8 << 10, n: 8 << 10},
	}
	for i, s := range steps {
		if err := s.run(n); s.wantErr == nil && err != nil || s.wantErr != nil && !errors.Is(err, s.wantErr) {
			t.Fatalf("step %d (%s %d+%d): got %v, want %v", i, s.op, s.off, s.n, err, s.wantErr)
		}
	}
	if d.Used() != 12<<10 || d.Size() != 1<<20 {
		t.Errorf("used %d, size %d; want 12 KiB, 1 MiB", d.Used(), d.Size())
	}
}

// TestContents: what is written reads back, truncate zeroes what a later
// growth shows, and Load keeps the bytes given.
func TestContents(t *testing.T) {
	d := Load([]byte("hello"))
	n := openDisk(t, d)
	if n.Length() != 512 {
		t.Fatalf("length %d, want 512 (a node is whole sectors)", n.Length())
	}
	buf := make([]byte, 512)
	if _, err := n.ReadAt(buf, 0); err != nil || string(buf[:6]) != "hello\x00" {
		t.Fatalf("read %q, %v", buf[:6], err)
	}
	if err := n.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	if _, err := n.WriteAt([]byte("xyz"), 4000); err != nil {
		t.Fatal(err)
	}
	if err := n.Truncate(2); err != nil {
		t.Fatal(err)
	}
	if err := n.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 4096)
	copy(want, "he")
	if !bytes.Equal(d.Bytes(), want) {
		t.Error("contents after shrink and growth differ")
	}
	if d.Count(Truncate) != 3 || d.Count(Write) != 1 || d.Seq() != 5 {
		t.Errorf("counts: %d truncates, %d writes, seq %d", d.Count(Truncate), d.Count(Write), d.Seq())
	}
}

// TestInstall: the driver exists in its graph only, and never shadows a
// driver registered process-wide.
func TestInstall(t *testing.T) {
	g, other := graph(t), graph(t)
	d := New(4096)
	if err := d.Install(g, "fault"); err != nil {
		t.Fatal(err)
	}
	if err := d.Install(g, "fault"); err == nil {
		t.Error("a second driver of the same name was added")
	}
	if err := d.Install(g, "file"); err == nil {
		t.Error("a graph driver shadowed the file driver")
	}
	if _, err := other.Add(block.Options{"driver": "fault"}); err == nil ||
		err.Error() != "Parameter 'driver' does not accept value 'fault'" {
		t.Errorf("another graph opened the driver: %v", err)
	}
	n, err := g.Add(block.Options{"driver": "fault", "filename": "/some/dir/img.qcow2", "read-only": true})
	if err != nil {
		t.Fatal(err)
	}
	if n.Filename() != "/some/dir/img.qcow2" {
		t.Errorf("filename %q", n.Filename())
	}
	if _, err := g.Attach("", n, block.Perm{Write: true}); err == nil {
		t.Error("write access to a read-only node")
	}
}
