package block_test

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// FuzzSnapshotTransaction runs arbitrary transactions of snapshot
// actions (blockdev-snapshot between any two names, blockdev-snapshot-sync
// onto existing and new fdset images, abort) over a graph with a written
// backend, spare overlays, a raw node and its file, reached through
// fdsets only. A transaction must answer, never panic; a failed one must
// leave graph, backends and fd count as they were; after any, every node
// reads and the backend still writes.
func FuzzSnapshotTransaction(f *testing.F) {
	dir := f.TempDir()
	paths := map[int64]string{}
	for set, name := range map[int64]string{1: "base.qcow2", 2: "ov1.qcow2", 3: "ov2.qcow2", 4: "r.raw", 5: "ex.qcow2", 6: "new.qcow2"} {
		p := filepath.Join(dir, name)
		paths[set] = p
		fh, err := os.Create(p)
		if err != nil {
			f.Fatal(err)
		}
		switch {
		case name == "new.qcow2":
		case filepath.Ext(name) == ".qcow2":
			err = qcow2.Create(fh, qcow2.CreateOptions{Size: 1 << 20})
		default:
			err = fh.Truncate(1 << 20)
		}
		fh.Close()
		if err != nil {
			f.Fatal(err)
		}
	}
	create := func(files *qemuopen.Registry, path, _, backing, backingFormat string, size int64) error {
		fd, err := files.Create(path, unix.O_RDWR, 0o600)
		if err != nil {
			return err
		}
		defer files.Close(fd)
		if err := unix.Ftruncate(fd, 0); err != nil {
			return err
		}
		return qcow2.Create(qcow2.FdTarget(fd), qcow2.CreateOptions{Size: uint64(size), BackingFile: backing, BackingFormat: backingFormat})
	}
	names := []string{"d0", "base", "ov1", "ov2", "r", "rf", "nope", "s", ""}
	for _, s := range [][]byte{
		{0, 0, 2}, {0, 0, 2, 1, 0, 0}, {0, 0, 2, 0, 2, 3}, {2, 0, 7}, {3, 1, 7, 1, 0, 0},
		{0, 4, 3}, {0, 0, 5}, {0, 0, 0}, {2, 0, 7, 0, 0, 2}, {0, 1, 2},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 3*8 {
			return
		}
		var actions []block.SnapshotAction
		for i := 0; i+2 < len(data); i += 3 {
			a, b := names[int(data[i+1])%len(names)], names[int(data[i+2])%len(names)]
			switch data[i] % 5 {
			case 0:
				actions = append(actions, block.SnapshotAction{Node: a, Overlay: b})
			case 1:
				actions = append(actions, block.SnapshotAction{Fail: errors.New("aborted")})
			case 2:
				actions = append(actions, block.SnapshotAction{Sync: &block.SnapshotSync{Device: a, File: "/dev/fdset/5", OverlayName: b, Existing: true}})
			case 3:
				actions = append(actions, block.SnapshotAction{Sync: &block.SnapshotSync{NodeName: a, File: "/dev/fdset/6", OverlayName: b, Create: create}})
			default:
				actions = append(actions, block.SnapshotAction{Sync: &block.SnapshotSync{Device: a, File: "/dev/fdset/4", Format: "raw", Existing: true}})
			}
		}
		reg := fdsetsOf(t, paths)
		defer reg.CloseAll()
		g := block.NewGraph(reg)
		defer g.Close()
		for _, o := range []string{
			`{"driver":"qcow2","node-name":"base","file":{"driver":"file","filename":"/dev/fdset/1"}}`,
			`{"driver":"qcow2","node-name":"ov1","backing":null,"file":{"driver":"file","filename":"/dev/fdset/2"}}`,
			`{"driver":"qcow2","node-name":"ov2","backing":null,"file":{"driver":"file","filename":"/dev/fdset/3"}}`,
			`{"driver":"raw","node-name":"r","file":{"driver":"file","node-name":"rf","filename":"/dev/fdset/4"}}`,
		} {
			if _, err := g.AddRoot(opts(t, "%s", o)); err != nil {
				t.Fatalf("%s: %v", o, err)
			}
		}
		base, _ := g.Node("base")
		b, err := g.Attach("d0", base, block.Perm{Write: true})
		if err != nil {
			t.Fatal(err)
		}
		before, fds := graphState(g), fdtest.Count()
		if err := g.Snapshot(actions); err != nil {
			if after := graphState(g); !maps.Equal(before, after) {
				t.Fatalf("failed transaction (%v) changed the graph:\n%v\n%v", err, before, after)
			}
			if n := fdtest.Count(); n != fds {
				t.Fatalf("failed transaction (%v): %d fds, %d before", err, n, fds)
			}
		}
		buf := make([]byte, 512)
		for _, n := range g.Nodes() {
			if _, err := n.ReadAt(buf, 0); err != nil {
				t.Fatalf("node %s no longer reads: %v", n.Name(), err)
			}
		}
		if _, err := b.WriteAt(buf, 4096); err != nil {
			t.Fatalf("the backend no longer writes (on %s): %v", b.Node().Name(), err)
		}
	})
}
