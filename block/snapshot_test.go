package block_test

import (
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// needQEMUTools skips without qemu-img/qemu-io, except under CI=true.
func needQEMUTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (CI=true)", tool)
			}
			t.Skipf("%s not installed; apt-get install qemu-utils", tool)
		}
	}
}

func qemuTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// snapshotChain is a base with 0xaa in its first 64 KiB (written by
// qemu-io), attached to a writable backend "d0", and an overlay file made
// by qemu-img over it, added with "backing": null.
func snapshotChain(t *testing.T, g *block.Graph) (base, overlay string, b *block.Backend) {
	t.Helper()
	dir := t.TempDir()
	base, overlay = filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "ov.qcow2")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
	qemuTool(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xaa 0 64k", base)
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay)
	top := mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":%q}}`, base))
	b, err := g.Attach("d0", top, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"ov","backing":null,"file":{"driver":"file","filename":%q}}`, overlay))
	return base, overlay, b
}

// TestSnapshotData: after a snapshot taken while a writer writes through
// the backend, writes go to the overlay, the base keeps what it had (and
// is read-only), reads through the chain see both, and qemu-img and
// qemu-io agree once the graph is closed.
func TestSnapshotData(t *testing.T) {
	needQEMUTools(t)
	g, reg := fixture(t)
	base, overlay, b := snapshotChain(t, g)

	if held := heldModes(t, reg, base); !slices.Equal(held, []string{"O_RDWR"}) {
		t.Fatalf("base held as %v before the snapshot", held)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	started := make(chan struct{})
	go func() { // a guest writing across the switch
		defer wg.Done()
		buf := make([]byte, 4096)
		for i := 0; !stop.Load() || i < 32; i++ {
			if i == 1 {
				close(started)
			}
			for j := range buf {
				buf[j] = 0xcc
			}
			if _, err := b.WriteAt(buf, 128<<10+int64(i%16)*4096); err != nil {
				t.Errorf("write during snapshot: %v", err)
				return
			}
		}
	}()
	<-started
	err := g.Snapshot([]block.SnapshotAction{{Node: "d0", Overlay: "ov"}})
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	top, ov := mustNode(t, g, "top"), mustNode(t, g, "ov")
	if b.Node() != ov || ov.Child("backing") != top || !top.ReadOnly() || ov.ReadOnly() {
		t.Fatalf("after snapshot: backend on %s, ov backing %v, top ro %v", b.Node().Name(), ov.Child("backing"), top.ReadOnly())
	}
	// The old top is reopened read-only, as in QEMU: its fd too.
	if held := heldModes(t, reg, base); !slices.Equal(held, []string{"O_RDONLY"}) {
		t.Errorf("base held as %v after the snapshot, want O_RDONLY", held)
	}
	if _, err := top.WriteAt(make([]byte, 512), 0); err == nil {
		t.Error("the old top took a write after the snapshot")
	}
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = 0xbb
	}
	if _, err := b.Node().WriteAt(buf, 64<<10); err != nil {
		t.Fatal(err)
	}
	if got := readByte(t, b.Node(), 0); got != 0xaa {
		t.Errorf("chain reads %#x at 0, want the base's 0xaa", got)
	}
	if got := readByte(t, b.Node(), 64<<10); got != 0xbb {
		t.Errorf("chain reads %#x at 64k, want 0xbb", got)
	}
	if err := g.Detach(b); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	reg.CloseAll()

	qemuTool(t, "qemu-img", "check", "-q", overlay)
	qemuTool(t, "qemu-img", "check", "-q", base)
	for _, c := range []struct{ img, cmd string }{
		{base, "read -P 0xaa 0 64k"}, {base, "read -P 0 64k 64k"}, {base, "read -P 0 192k 832k"},
		{overlay, "read -P 0xaa 0 64k"}, {overlay, "read -P 0xbb 64k 64k"}, {overlay, "read -P 0xcc 128k 64k"},
	} {
		out := qemuTool(t, "qemu-io", "-f", "qcow2", "-c", c.cmd, c.img)
		if !containsLine(out, "read ") || containsLine(out, "Pattern verification failed") {
			t.Errorf("qemu-io %s %q:\n%s", filepath.Base(c.img), c.cmd, out)
		}
	}
}

func containsLine(s, sub string) bool {
	return len(s) > 0 && (len(sub) == 0 || indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func mustNode(t *testing.T, g *block.Graph, name string) *block.Node {
	t.Helper()
	n, ok := g.Node(name)
	if !ok {
		t.Fatalf("no node %s", name)
	}
	return n
}

// graphState is what a failed transaction must leave as it was: every
// node's info and children, and the node each backend uses.
func graphState(g *block.Graph) map[string]string {
	out := snapshot(g)
	for _, b := range g.Backends() {
		out["backend "+b.Name()] = b.Node().Name()
	}
	return out
}

// TestSnapshotTransactionAllOrNothing: a transaction whose last action
// fails leaves the graph, the backends and the process's fds as they
// were, whether the failing action is a refusal, QMP's abort, or comes
// after a blockdev-snapshot-sync that made and opened its overlay (its
// node is closed again; its file stays, as QEMU leaves it).
func TestSnapshotTransactionAllOrNothing(t *testing.T) {
	needQEMUTools(t)
	g, _ := fixture(t)
	_, _, _ = snapshotChain(t, g)
	newFile := filepath.Join(t.TempDir(), "sync.qcow2")
	create := func(_ *qemuopen.Registry, path, format, backing, backingFormat string, size int64) error {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return qcow2.Create(f, qcow2.CreateOptions{Size: uint64(size), BackingFile: backing, BackingFormat: backingFormat})
	}
	sync := block.SnapshotAction{Sync: &block.SnapshotSync{Device: "d0", File: newFile, OverlayName: "s", Create: create}}
	aborted := errors.New("Transaction aborted using Abort action")
	for _, tc := range []struct {
		name    string
		actions []block.SnapshotAction
		want    string
	}{
		{"missing overlay", []block.SnapshotAction{{Node: "d0", Overlay: "ov"}, {Node: "top", Overlay: "nope"}},
			"Cannot find device='nope' nor node-name='nope'"},
		{"abort", []block.SnapshotAction{{Node: "d0", Overlay: "ov"}, {Fail: aborted}}, aborted.Error()},
		{"sync then abort", []block.SnapshotAction{sync, {Fail: aborted}}, aborted.Error()},
		{"sync then refusal", []block.SnapshotAction{sync, {Node: "d0", Overlay: "ov"}}, "Node 'top' is listed twice"},
		{"overlay onto itself", []block.SnapshotAction{{Node: "d0", Overlay: "ov"}, {Node: "ov", Overlay: "ov"}},
			"Making 'ov' a backing child of 'ov' would create a cycle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, fds := graphState(g), fdtest.Open()
			err := g.Snapshot(tc.actions)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if after := graphState(g); !maps.Equal(before, after) {
				t.Errorf("graph changed:\n before %v\n after  %v", before, after)
			}
			if after := fdtest.Open(); len(after) != len(fds) {
				t.Errorf("fds: %s", fdtest.Diff(fds, after))
			}
		})
	}
	if _, err := os.Stat(newFile); err != nil {
		t.Errorf("the sync action's file: %v (QEMU leaves it)", err)
	}
}

// TestSnapshotFdsetAfterFailedTransaction: an overlay opened from an
// fdset by a transaction that then failed leaves nothing behind on the
// set's file (no fd, no lock), so the same set serves the next attempt.
// QEMU 7.2 refuses that one with 'Failed to get "write" lock': the lock
// its closed overlay took stays on the set's open file description.
func TestSnapshotFdsetAfterFailedTransaction(t *testing.T) {
	needQEMUTools(t)
	g, reg := fixture(t)
	base, _, b := snapshotChain(t, g)
	ov := filepath.Join(t.TempDir(), "ov.qcow2")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", ov)
	addFds(t, reg, 2, ov, os.O_RDONLY, os.O_RDWR)
	sync := block.SnapshotAction{Sync: &block.SnapshotSync{Device: "d0", File: "/dev/fdset/2", OverlayName: "s", Existing: true}}
	before := fdtest.Count()
	if err := g.Snapshot([]block.SnapshotAction{sync, {Fail: errors.New("aborted")}}); err == nil || err.Error() != "aborted" {
		t.Fatalf("got %v", err)
	}
	if n := fdtest.Count(); n != before {
		t.Fatalf("fds: %d after the failed transaction, %d before", n, before)
	}
	if held := heldModes(t, reg, ov); len(held) != 0 {
		t.Fatalf("fds still held on the overlay: %v", held)
	}
	if err := g.Snapshot([]block.SnapshotAction{sync}); err != nil {
		t.Fatal(err)
	}
	if b.Node().Name() != "s" || b.Node().Child("backing").Name() != "top" {
		t.Fatalf("backend on %s", b.Node().Name())
	}
	if held := heldModes(t, reg, ov); len(held) != 1 || held[0] != "O_RDWR" {
		t.Errorf("the overlay's node holds %v, want one O_RDWR fd", held)
	}
}

// TestSnapshotSyncLoneNode: a blockdev-snapshot-sync of a node that no
// backend or parent uses keeps its overlay as a node the monitor owns
// (QEMU drops it at once); blockdev-del removes it again, and the old top
// stays read-only.
func TestSnapshotSyncLoneNode(t *testing.T) {
	needQEMUTools(t)
	g, _ := fixture(t)
	base := filepath.Join(t.TempDir(), "lone.qcow2")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
	mustAdd(t, g, opts(t, `{"driver":"qcow2","node-name":"lone","file":{"driver":"file","filename":%q}}`, base))
	ov := filepath.Join(t.TempDir(), "lone-ov.qcow2")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", ov)
	err := g.Snapshot([]block.SnapshotAction{{Sync: &block.SnapshotSync{NodeName: "lone", File: ov, OverlayName: "lov", Existing: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if n := mustNode(t, g, "lov"); n.Child("backing") != mustNode(t, g, "lone") || !mustNode(t, g, "lone").ReadOnly() {
		t.Fatalf("lov's backing %v", n.Child("backing"))
	}
	if err := g.Delete("lone"); err == nil || err.Error() != "Node 'lone' is busy: node is used as backing hd of 'lov'" {
		t.Fatalf("deleting the old top: %v", err)
	}
	if err := g.Delete("lov"); err != nil {
		t.Fatal(err)
	}
	if err := g.Delete("lone"); err != nil {
		t.Fatal(err)
	}
	qemuTool(t, "qemu-img", "check", "-q", ov)
}
