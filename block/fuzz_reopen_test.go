package block_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/internal/jsonval"
	"minivmm/qemuopen"
)

// FuzzBlockdevReopen feeds blockdev-reopen arbitrary option lists over a
// graph with formats that have children: qcow2 over a file node, with a
// backing node and without, raw over an inline file, null-co. Images are
// reached through fdsets only (the registry refuses plain paths), so the
// fuzzer cannot name host files. A reopen must answer, never panic; a
// failed one must change nothing; every node must still serve a read.
func FuzzBlockdevReopen(f *testing.F) {
	dir := f.TempDir()
	paths := map[int64]string{}
	for set, name := range map[int64]string{1: "plain.qcow2", 2: "top.qcow2", 3: "disk.raw", 4: "other.qcow2"} {
		p := filepath.Join(dir, name)
		paths[set] = p
		fh, err := os.Create(p)
		if err != nil {
			f.Fatal(err)
		}
		switch filepath.Ext(name) {
		case ".qcow2":
			o := qcow2.CreateOptions{Size: 1 << 20}
			if name == "top.qcow2" {
				o.BackingFile, o.BackingFormat = "plain.qcow2", "qcow2"
			}
			err = qcow2.Create(fh, o)
		default:
			err = fh.Truncate(1 << 20)
		}
		fh.Close()
		if err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range []string{
		`{"driver":"qcow2","node-name":"qc0","file":"f","read-only":true}`,
		`{"driver":"qcow2","node-name":"qc0","file":"f"}`,
		`{"driver":"qcow2","node-name":"qc0","file":"f","backing":null}`,
		`{"driver":"qcow2","node-name":"qc0","file":"fo","read-only":true}`,
		`{"driver":"qcow2","node-name":"top","file":"ftop","backing":"qc0"}`,
		`{"driver":"qcow2","node-name":"top","file":"ftop","backing":null}`,
		`{"driver":"qcow2","node-name":"top","file":"ftop"}`,
		`{"driver":"qcow2","node-name":"top","file":"ftop","backing":"top"}`,
		`{"driver":"qcow2","node-name":"qc0","file":"f","backing":"top"}`,
		`{"driver":"qcow2","node-name":"top","file":"ftop","backing":"qc0","l2-cache-size":65536,"lazy-refcounts":true}`,
		`{"driver":"raw","node-name":"r","file":{"driver":"file","filename":"/dev/fdset/3"},"read-only":true}`,
		`{"driver":"raw","node-name":"r","file":"f","offset":0}`,
		`{"driver":"raw","node-name":"r","file":"fo"}`,
		`{"driver":"raw","node-name":"r","file":"f"}`,
		`{"driver":"raw","node-name":"r","file":{"driver":"file","filename":"/dev/fdset/3","cache":{"direct":true}}}`,
		`{"driver":"file","node-name":"f","filename":"/dev/fdset/1","read-only":true}`,
		`{"driver":"null-co","node-name":"n","size":4096,"read-only":true}`,
		`[{"driver":"qcow2","node-name":"qc0","file":"f","read-only":true},{"driver":"file","node-name":"f","filename":"/dev/fdset/1","read-only":true}]`,
		`[{"driver":"qcow2","node-name":"top","file":"ftop","backing":null},{"driver":"qcow2","node-name":"qc0","file":"f","backing":"top"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := jsonval.Decode(data)
		if err != nil {
			return
		}
		var list []block.Options
		switch v := v.(type) {
		case map[string]any:
			list = []block.Options{v}
		case []any:
			for _, e := range v {
				m, ok := e.(map[string]any)
				if !ok {
					return
				}
				list = append(list, m)
			}
		default:
			return
		}
		reg := fdsetsOf(t, paths)
		defer reg.CloseAll()
		g := block.NewGraph(reg)
		defer g.Close()
		for _, o := range []string{
			`{"driver":"file","node-name":"f","filename":"/dev/fdset/1"}`,
			`{"driver":"file","node-name":"fo","filename":"/dev/fdset/4"}`,
			`{"driver":"qcow2","node-name":"qc0","file":"f"}`,
			`{"driver":"file","node-name":"ftop","filename":"/dev/fdset/2"}`,
			`{"driver":"qcow2","node-name":"top","file":"ftop","backing":"qc0"}`,
			`{"driver":"raw","node-name":"r","file":{"driver":"file","filename":"/dev/fdset/3"}}`,
			`{"driver":"null-co","node-name":"n","size":4096}`,
		} {
			m, err := jsonval.Decode([]byte(o))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := g.AddRoot(block.Options(m.(map[string]any))); err != nil {
				t.Fatalf("%s: %v", o, err)
			}
		}
		// r is being written, so that a new file child takes its writer.
		if r, ok := g.Node("r"); !ok {
			t.Fatal("no node r")
		} else if _, err := g.Attach("w", r, block.Perm{Write: true}); err != nil {
			t.Fatal(err)
		}
		before := snapshot(g)
		if err := g.Reopen(list); err != nil {
			if after := snapshot(g); !reflect.DeepEqual(before, after) {
				t.Fatalf("failed reopen (%v) changed the graph:\n%v\n%v", err, before, after)
			}
		}
		buf := make([]byte, 512)
		for _, n := range g.Nodes() {
			n.Info()
			if _, err := n.ReadAt(buf, 0); err != nil {
				t.Fatalf("node %s no longer reads: %v", n.Name(), err)
			}
		}
	})
}

// snapshot is what a reopen may change, per node: its info and children.
func snapshot(g *block.Graph) map[string]string {
	out := map[string]string{}
	for _, n := range g.Nodes() {
		info := n.Info()
		dirty := info.DirtyFlag != nil && *info.DirtyFlag
		info.DirtyFlag = nil
		s := fmt.Sprintf("%+v dirty=%v", info, dirty)
		for _, c := range []string{"file", "backing"} {
			if ch := n.Child(c); ch != nil {
				s += " " + c + "=" + ch.Name()
			}
		}
		out[n.Name()] = s
	}
	return out
}

// fdsetsOf makes a confined registry (only /dev/fdset/N opens) holding,
// for each set, an O_RDWR and an O_RDONLY fd of its image, as a
// management layer would pass them.
func fdsetsOf(t *testing.T, paths map[int64]string) *qemuopen.Registry {
	reg := qemuopen.New(qemuopen.Config{FdsetOnly: true})
	for set, p := range paths {
		for _, mode := range []int{unix.O_RDWR, unix.O_RDONLY} {
			fd, err := unix.Open(p, mode|unix.O_CLOEXEC, 0)
			if err != nil {
				reg.CloseAll()
				t.Fatal(err)
			}
			if _, _, err := reg.AddFd(fd, qemuopen.AddRequest{SetID: &set}); err != nil {
				unix.Close(fd)
				reg.CloseAll()
				t.Fatal(err)
			}
		}
	}
	return reg
}
