package quorum

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	_ "minivmm/block/blkdebug"
	_ "minivmm/block/file"
	_ "minivmm/block/raw"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

const size = 1 << 20

// rig is a quorum over raw files, and the events it raised.
type rig struct {
	g      *block.Graph
	q      *block.Node
	b      *block.Backend
	paths  []string
	mu     sync.Mutex
	events []string
}

func (r *rig) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.events
	r.events = nil
	return e
}

// newRig opens a quorum over n files of size bytes, each filled with
// fill, with the extra options given, attached for writing.
func newRig(t *testing.T, n int, extra block.Options) *rig {
	t.Helper()
	r := &rig{g: block.NewGraph(qemuopen.New(qemuopen.Config{}))}
	r.g.OnDriverEvent(func(e block.DriverEvent) {
		var b strings.Builder
		b.WriteString(e.Name)
		for _, m := range e.Data {
			fmt.Fprintf(&b, " %s=%v", m.Key, m.Value)
		}
		r.mu.Lock()
		r.events = append(r.events, b.String())
		r.mu.Unlock()
	})
	dir := t.TempDir()
	var children []any
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("c%d", i))
		if err := os.WriteFile(p, bytes.Repeat([]byte{0x11}, size), 0o644); err != nil {
			t.Fatal(err)
		}
		r.paths = append(r.paths, p)
		children = append(children, block.Options{"driver": "file", "filename": p, "node-name": fmt.Sprintf("c%d", i)})
	}
	o := block.Options{"driver": "quorum", "node-name": "q", "children": children, "vote-threshold": int64(2)}
	for k, v := range extra {
		o[k] = v
	}
	q, err := r.g.Add(o)
	if err != nil {
		r.g.Close()
		t.Fatal(err)
	}
	r.q = q
	if r.b, err = r.g.Attach("", q, block.Perm{Write: true}); err != nil {
		r.g.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.g.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

// poke writes p into child i's file behind the quorum's back.
func (r *rig) poke(t *testing.T, i int, p []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(r.paths[i], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) file(t *testing.T, i int, off, n int64) []byte {
	t.Helper()
	data, err := os.ReadFile(r.paths[i])
	if err != nil {
		t.Fatal(err)
	}
	return data[off : off+n]
}

func TestReadVote(t *testing.T) {
	fill := func(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }
	for _, tc := range []struct {
		name    string
		extra   block.Options
		pokes   map[int]byte // child -> what its 4 KiB at 64 KiB become
		want    byte         // what the read returns; 0: it fails with EIO
		events  []string
		healed  []int // children rewritten with the winner
		corrupt []int // children left as poked
	}{
		{name: "all agree", want: 0x11},
		{name: "one corrupt", pokes: map[int]byte{1: 0xee}, want: 0x11,
			events:  []string{"QUORUM_REPORT_BAD type=read node-name=c1 sector-num=128 sectors-count=8"},
			corrupt: []int{1}},
		{name: "one corrupt, rewritten", extra: block.Options{"rewrite-corrupted": true}, pokes: map[int]byte{2: 0xee}, want: 0x11,
			events: []string{"QUORUM_REPORT_BAD type=read node-name=c2 sector-num=128 sectors-count=8"},
			healed: []int{2}},
		{name: "two corrupt alike: they win", pokes: map[int]byte{0: 0xee, 2: 0xee}, want: 0xee,
			events: []string{"QUORUM_REPORT_BAD type=read node-name=c1 sector-num=128 sectors-count=8"}},
		{name: "all differ: no quorum", pokes: map[int]byte{0: 0xaa, 1: 0xbb}, want: 0,
			events: []string{"QUORUM_FAILURE reference=q sector-num=128 sectors-count=8"}},
		{name: "fifo reads the first child only", extra: block.Options{"read-pattern": "fifo"}, pokes: map[int]byte{0: 0xee}, want: 0xee},
		{name: "threshold 1, all differ: the last version wins", extra: block.Options{"vote-threshold": int64(1)},
			pokes: map[int]byte{0: 0xaa, 1: 0xbb}, want: 0x11,
			events: []string{
				"QUORUM_REPORT_BAD type=read node-name=c1 sector-num=128 sectors-count=8",
				"QUORUM_REPORT_BAD type=read node-name=c0 sector-num=128 sectors-count=8",
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fdtest.Check(t)
			r := newRig(t, 3, tc.extra)
			for i, b := range tc.pokes {
				r.poke(t, i, fill(b), 64<<10)
			}
			got := make([]byte, 4096)
			_, err := r.b.ReadAt(got, 64<<10)
			if tc.want == 0 {
				if !errors.Is(err, unix.EIO) {
					t.Fatalf("read: %v, want EIO", err)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if !bytes.Equal(got, fill(tc.want)) {
				t.Fatalf("read %#x..., want %#x", got[0], tc.want)
			}
			if ev := r.take(); !slices.Equal(ev, tc.events) {
				t.Errorf("events:\n%s\nwant:\n%s", strings.Join(ev, "\n"), strings.Join(tc.events, "\n"))
			}
			for _, i := range tc.healed {
				if !bytes.Equal(r.file(t, i, 64<<10, 4096), fill(tc.want)) {
					t.Errorf("child %d not rewritten", i)
				}
			}
			for _, i := range tc.corrupt {
				if !bytes.Equal(r.file(t, i, 64<<10, 4096), fill(tc.pokes[i])) {
					t.Errorf("child %d rewritten without rewrite-corrupted", i)
				}
			}
		})
	}
}

func TestWriteReachesEveryChild(t *testing.T) {
	fdtest.Check(t)
	r := newRig(t, 3, nil)
	p := bytes.Repeat([]byte{0x5a}, 3000)
	if _, err := r.b.WriteAt(p, 1000); err != nil {
		t.Fatal(err)
	}
	if err := r.b.WriteZeroes(8192, 4096, false); err != nil {
		t.Fatal(err)
	}
	if err := r.b.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range r.paths {
		if !bytes.Equal(r.file(t, i, 1000, 3000), p) {
			t.Errorf("child %d: write missing", i)
		}
		if !bytes.Equal(r.file(t, i, 8192, 4096), make([]byte, 4096)) {
			t.Errorf("child %d: zeroes missing", i)
		}
	}
	if ev := r.take(); len(ev) != 0 {
		t.Errorf("events: %q", ev)
	}
}

// TestWriteErrors fails writes on one or two children (blkdebug): the
// write succeeds while vote-threshold children take it, each failing
// child is reported, and without a quorum the write fails.
func TestWriteErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		failing int
		wantErr bool
		events  []string
	}{
		{"one child fails", 1, false, []string{"QUORUM_REPORT_BAD type=write error=Input/output error node-name=bd0 sector-num=0 sectors-count=1"}},
		{"two children fail", 2, true, []string{
			"QUORUM_REPORT_BAD type=write error=Input/output error node-name=bd0 sector-num=0 sectors-count=1",
			"QUORUM_REPORT_BAD type=write error=Input/output error node-name=bd1 sector-num=0 sectors-count=1",
			"QUORUM_FAILURE reference=q sector-num=0 sectors-count=1",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fdtest.Check(t)
			g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
			defer g.Close()
			var mu sync.Mutex
			var events []string
			g.OnDriverEvent(func(e block.DriverEvent) {
				var b strings.Builder
				b.WriteString(e.Name)
				for _, m := range e.Data {
					fmt.Fprintf(&b, " %s=%v", m.Key, m.Value)
				}
				mu.Lock()
				events = append(events, b.String())
				mu.Unlock()
			})
			dir := t.TempDir()
			var children []any
			for i := range 3 {
				p := filepath.Join(dir, fmt.Sprint(i))
				if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
					t.Fatal(err)
				}
				file := block.Options{"driver": "file", "filename": p}
				if i < tc.failing {
					children = append(children, block.Options{"driver": "blkdebug", "node-name": fmt.Sprintf("bd%d", i), "image": file,
						"inject-error": []any{map[string]any{"event": "pwritev", "errno": json5()}}})
				} else {
					children = append(children, file)
				}
			}
			q, err := g.Add(block.Options{"driver": "quorum", "node-name": "q", "children": children, "vote-threshold": int64(2)})
			if err != nil {
				t.Fatal(err)
			}
			b, err := g.Attach("", q, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.WriteAt([]byte("data"), 0)
			if tc.wantErr != (err != nil) {
				t.Fatalf("write: %v, want an error: %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, unix.EIO) {
				t.Fatalf("write: %v, want EIO", err)
			}
			slices.Sort(events[:tc.failing])
			if !slices.Equal(events, tc.events) {
				t.Errorf("events:\n%s\nwant:\n%s", strings.Join(events, "\n"), strings.Join(tc.events, "\n"))
			}
		})
	}
}

func json5() any { return int64(5) } // EIO, as blkdebug's errno option takes it

func TestOpenRefusals(t *testing.T) {
	dir := t.TempDir()
	short, long := filepath.Join(dir, "short"), filepath.Join(dir, "long")
	os.WriteFile(short, make([]byte, 4096), 0o644)
	os.WriteFile(long, make([]byte, 8192), 0o644)
	for _, tc := range []struct {
		name string
		opts block.Options
		err  string
	}{
		{"lengths differ", block.Options{"children": []any{
			block.Options{"driver": "file", "filename": short}, block.Options{"driver": "file", "filename": long}}, "vote-threshold": int64(1)},
			"Could not refresh total sector count: Input/output error"},
		{"unknown node", block.Options{"children": []any{"nosuch"}, "vote-threshold": int64(1)},
			"Cannot find device='nosuch' nor node-name='nosuch'"},
		{"bad inline child", block.Options{"children": []any{block.Options{"driver": "file"}}, "vote-threshold": int64(1)},
			"Parameter 'filename' is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fdtest.Check(t)
			g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
			defer g.Close()
			o := block.Options{"driver": "quorum", "node-name": "q"}
			for k, v := range tc.opts {
				o[k] = v
			}
			_, err := g.Add(o)
			if err == nil || err.Error() != tc.err {
				t.Fatalf("got %v, want %q", err, tc.err)
			}
			if n := len(g.Nodes()); n != 0 {
				t.Fatalf("%d nodes left behind", n)
			}
		})
	}
}

// TestChildrenByName: children given as node-names are the graph's
// nodes; the quorum's json: name lists them, and they outlive it.
func TestChildrenByName(t *testing.T) {
	fdtest.Check(t)
	g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
	defer g.Close()
	dir := t.TempDir()
	for _, name := range []string{"a", "b"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, make([]byte, 4096), 0o644)
		if _, err := g.Add(block.Options{"driver": "file", "node-name": name, "filename": p}); err != nil {
			t.Fatal(err)
		}
	}
	q, err := g.Add(block.Options{"driver": "quorum", "node-name": "q", "children": []any{"a", "b"}, "vote-threshold": int64(2)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := q.Filename(), `json:{"children":["a","b"],"driver":"quorum","vote-threshold":2}`; got != want {
		t.Errorf("filename %s, want %s", got, want)
	}
	if _, err := q.Dirname(); err == nil || err.Error() != "Cannot generate a base directory for quorum nodes" {
		t.Errorf("dirname: %v", err)
	}
	if err := g.Delete("a"); err == nil {
		t.Error("a child in use was deleted")
	}
	if err := g.Delete("q"); err != nil {
		t.Fatal(err)
	}
	if err := g.Delete("a"); err != nil {
		t.Fatal(err)
	}
}

func TestBlkverifyMismatch(t *testing.T) {
	fdtest.Check(t)
	r := newRig(t, 2, block.Options{"blkverify": true})
	r.poke(t, 1, []byte{0xee}, 4100)
	_, err := r.b.ReadAt(make([]byte, 4096), 4096)
	if !errors.Is(err, unix.EIO) || !strings.Contains(err.Error(), "quorum: offset=4096 bytes=4096 contents mismatch at offset 4100") {
		t.Fatalf("read: %v", err)
	}
}

func TestBlockStatus(t *testing.T) {
	fdtest.Check(t)
	r := newRig(t, 3, nil)
	st, n, err := r.q.BlockStatus(0, size)
	if err != nil || !st.Data || st.Zero || n != size {
		t.Fatalf("status %+v %d %v", st, n, err)
	}
}

// TestNameAbove: a format over a quorum is named by a json: description
// of itself, as QEMU names it, not by the quorum's.
func TestNameAbove(t *testing.T) {
	fdtest.Check(t)
	g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
	defer g.Close()
	p := filepath.Join(t.TempDir(), "c")
	os.WriteFile(p, make([]byte, 4096), 0o644)
	n, err := g.Add(block.Options{"driver": "raw", "file": block.Options{"driver": "quorum", "vote-threshold": int64(1),
		"children": []any{block.Options{"driver": "file", "filename": p}}}})
	if err != nil {
		t.Fatal(err)
	}
	want := `json:{"driver":"raw","file":{"children":[{"driver":"file","filename":"` + p + `"}],"driver":"quorum","vote-threshold":1}}`
	if got := n.Filename(); got != want {
		t.Errorf("filename %s, want %s", got, want)
	}
	if size := n.Info().ActualSize; size < 0 {
		t.Errorf("actual size %d", size)
	}
}

// TestConcurrent: requests from many goroutines at once each see the
// quorum's answer (run under -race).
func TestConcurrent(t *testing.T) {
	fdtest.Check(t)
	r := newRig(t, 3, block.Options{"rewrite-corrupted": true})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(w) * 64 << 10
			p := bytes.Repeat([]byte{byte(w + 1)}, 64<<10)
			for range 20 {
				if _, err := r.b.WriteAt(p, off); err != nil {
					t.Error(err)
					return
				}
				got := make([]byte, len(p))
				if _, err := r.b.ReadAt(got, off); err != nil || !bytes.Equal(got, p) {
					t.Errorf("read back: %v", err)
					return
				}
			}
			if err := r.b.Flush(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ev := r.take(); len(ev) != 0 {
		t.Errorf("events: %q", ev)
	}
}

// TestChangeChildren: a child added at run time takes the writes from
// then on and votes; a child removed no longer does, and one created
// inline goes with it.
func TestChangeChildren(t *testing.T) {
	fdtest.Check(t)
	r := newRig(t, 3, nil)
	p := filepath.Join(t.TempDir(), "new")
	if err := os.WriteFile(p, bytes.Repeat([]byte{0x11}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.g.Add(block.Options{"driver": "file", "node-name": "new", "filename": p}); err != nil {
		t.Fatal(err)
	}
	if err := r.g.AddChild("q", "new"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.b.WriteAt([]byte("abcd"), 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got[:4]) != "abcd" {
		t.Fatalf("the new child did not get the write: %q", got[:4])
	}
	if got := r.q.Child("children.3"); got == nil || got.Name() != "new" {
		t.Fatalf("children.3 is %v", got)
	}
	for _, role := range []string{"children.0", "children.1"} {
		if err := r.g.RemoveChild("q", role); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := r.g.Node("c0"); ok {
		t.Error("an inline child outlived its removal")
	}
	if err := r.g.RemoveChild("q", "children.2"); err == nil || err.Error() != "The number of children cannot be lower than the vote threshold 2" {
		t.Fatalf("removing below the threshold: %v", err)
	}
	// Two children left: one corrupted, no quorum.
	r.poke(t, 2, []byte{0xee}, 0)
	if _, err := r.b.ReadAt(make([]byte, 512), 0); !errors.Is(err, unix.EIO) {
		t.Fatalf("read: %v, want EIO", err)
	}
	if _, err := r.b.WriteAt([]byte("efgh"), 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := r.b.ReadAt(got, 0); err != nil || string(got) != "efgh" {
		t.Fatalf("read %q, %v", got, err)
	}
	r.take()
}
