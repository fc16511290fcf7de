package block_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// fixture is a graph over a registry, closed (and checked for leaks) at
// the end of the test.
func fixture(t *testing.T) (*block.Graph, *qemuopen.Registry) {
	t.Helper()
	fdtest.Check(t)
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	t.Cleanup(func() {
		g.Close()
		reg.CloseAll()
	})
	return g, reg
}

func image(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// opts parses JSON options as QMP would hand them over.
func opts(t *testing.T, format string, a ...any) block.Options {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(fmt.Sprintf(format, a...)))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("bad test options: %v", err)
	}
	return block.Options(m)
}

// addFds puts fds of path opened with modes into set.
func addFds(t *testing.T, reg *qemuopen.Registry, set int64, path string, modes ...int) {
	t.Helper()
	for _, m := range modes {
		fd, err := unix.Open(path, m|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := reg.AddFd(fd, qemuopen.AddRequest{SetID: &set}); err != nil {
			t.Fatal(err)
		}
	}
}

// heldModes lists the access mode and O_DIRECT of every fd this process
// holds on path that is not a user fd of reg: the fds nodes hold.
func heldModes(t *testing.T, reg *qemuopen.Registry, path string) []string {
	t.Helper()
	user := map[int]bool{}
	for _, s := range reg.Query() {
		for _, f := range s.Fds {
			user[f.Fd] = true
		}
	}
	var out []string
	for _, fd := range fdtest.Open() {
		if user[fd] {
			continue
		}
		if target, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); target != path {
			continue
		}
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil {
			continue
		}
		out = append(out, qemuopen.FlagString(fl))
	}
	slices.Sort(out)
	return out
}

func TestAddAndIO(t *testing.T) {
	g, _ := fixture(t)
	path := image(t, 1<<20)
	n, err := g.Add(opts(t, `{"driver":"raw","node-name":"disk","file":{"driver":"file","filename":%q}}`, path))
	if err != nil {
		t.Fatal(err)
	}
	if n.Length() != 1<<20 || n.Child("file") == nil || !strings.HasPrefix(n.Child("file").Name(), "#block") {
		t.Fatalf("node: length %d, child %v", n.Length(), n.Child("file"))
	}
	// No write permission without a writer attached.
	if _, err := n.WriteAt([]byte("x"), 0); !errors.Is(err, unix.EPERM) {
		t.Fatalf("write without permission: %v", err)
	}
	b, err := g.Attach("drive0", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0xab}, 4096)
	if _, err := n.WriteAt(data, 8192); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if _, err := n.ReadAt(got, 8192); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	// Past the end is EIO, naming the node.
	_, err = n.ReadAt(got, 1<<20-100)
	var be *block.Error
	if !errors.Is(err, unix.EIO) || !errors.As(err, &be) || be.Node != "disk" {
		t.Fatalf("read past end: %v", err)
	}
	if err := g.Delete("disk"); err == nil {
		t.Fatal("deleted a node in use")
	}
	g.Detach(b)
	if err := g.Delete(n.Child("file").Name()); err == nil {
		t.Fatal("deleted an inline child")
	}
	if err := g.Delete("disk"); err != nil {
		t.Fatal(err)
	}
	if len(g.Nodes()) != 0 {
		t.Fatalf("left: %v", g.Nodes())
	}
}

func TestAddErrors(t *testing.T) {
	g, _ := fixture(t)
	path := image(t, 4096)
	dir := t.TempDir()
	// Another file: a node holding path read-write would lock it.
	if _, err := g.Add(opts(t, `{"driver":"file","node-name":"taken","filename":%q}`, image(t, 512))); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ in, want string }{
		{`{"node-name":"a"}`, "Parameter 'driver' is missing"},
		{`{"driver":"nosuch"}`, "Parameter 'driver' does not accept value 'nosuch'"},
		{`{"driver":"file"}`, "Parameter 'filename' is missing"},
		{`{"driver":"file","filename":"x","bogus":1}`, "Parameter 'bogus' is unexpected"},
		{`{"driver":"file","filename":"x","cache":{"bogus":1}}`, "Parameter 'cache.bogus' is unexpected"},
		{`{"driver":"file","filename":"x","read-only":"yes"}`, "Invalid parameter type for 'read-only', expected: boolean"},
		{`{"driver":"null-co","size":"x"}`, "Invalid parameter type for 'size', expected: integer"},
		{`{"driver":"null-co","size":-1}`, "Parameter 'size' expects a non-negative number below 2^64"},
		{`{"driver":"file","node-name":"taken","filename":"x"}`, "Duplicate nodes with node-name='taken'"},
		{`{"driver":"file","node-name":"1abc","filename":"x"}`, "Invalid node-name: '1abc'"},
		{`{"driver":"file","node-name":"#block1","filename":"x"}`, "Invalid node-name: '#block1'"},
		{`{"driver":"file","filename":"/nonexistent/x"}`, "Could not open '/nonexistent/x': No such file or directory"},
		{fmt.Sprintf(`{"driver":"file","filename":%q}`, dir), "Is a directory"},
		{fmt.Sprintf(`{"driver":"file","read-only":true,"filename":%q}`, dir), "'file' driver requires '" + dir + "' to be a regular file"},
		{`{"driver":"raw"}`, "Parameter 'file' is missing"},
		{`{"driver":"file","node-name":"abcdefghijabcdefghijabcdefghij12","filename":"x"}`, "Node name too long"},
		{`{"driver":"raw","file":"nosuch"}`, "Cannot find device='nosuch' nor node-name='nosuch'"},
		{fmt.Sprintf(`{"driver":"raw","offset":8192,"file":{"driver":"file","filename":%q}}`, path), "Offset (8192) cannot be greater than size of the containing file (4096)"},
		{fmt.Sprintf(`{"driver":"raw","offset":512,"size":4096,"file":{"driver":"file","filename":%q}}`, path), "The sum of offset (512) and size (4096) has to be smaller or equal to the  actual size of the containing file (4096)"},
		{fmt.Sprintf(`{"driver":"raw","size":100,"file":{"driver":"file","filename":%q}}`, path), "Specified size is not multiple of 512"},
		{`{"driver":"null-co","detect-zeroes":"unmap"}`, "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap"},
		{`{"driver":"null-co","discard":"sometimes"}`, "Parameter 'discard' does not accept value 'sometimes'"},
	}
	for _, tc := range tests {
		before := len(g.Nodes())
		_, err := g.Add(opts(t, "%s", tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Add(%s) = %v, want %q", tc.in, err, tc.want)
		}
		if len(g.Nodes()) != before {
			t.Errorf("Add(%s) failed but left nodes: %d", tc.in, len(g.Nodes()))
		}
	}
}

func TestReadOnlyRefusesWrites(t *testing.T) {
	g, _ := fixture(t)
	n, err := g.Add(opts(t, `{"driver":"file","node-name":"ro","read-only":true,"filename":%q}`, image(t, 4096)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Attach("", n, block.Perm{Write: true}); !errors.Is(err, unix.EPERM) {
		t.Fatalf("writer on a read-only node: %v", err)
	}
	if _, err := n.WriteAt([]byte{1}, 0); !errors.Is(err, unix.EPERM) {
		t.Fatalf("write: %v", err)
	}
}

func TestFdsetOpenAndAutoReadOnly(t *testing.T) {
	g, reg := fixture(t)
	path := image(t, 65536)
	addFds(t, reg, 1, path, unix.O_RDONLY)
	if _, err := g.Add(opts(t, `{"driver":"file","node-name":"rw","filename":"/dev/fdset/1"}`)); !errors.Is(err, unix.EACCES) {
		t.Fatalf("read-write open with only an O_RDONLY fd: %v", err)
	}
	n, err := g.Add(opts(t, `{"driver":"file","node-name":"f","auto-read-only":true,"filename":"/dev/fdset/1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := heldModes(t, reg, path); !slices.Equal(got, []string{"O_RDONLY"}) {
		t.Fatalf("auto-read-only node holds %v", got)
	}
	// A writer needs the read-write fd the set lacks: refused, nothing changed.
	if _, err := g.Attach("", n, block.Perm{Write: true}); !errors.Is(err, unix.EACCES) {
		t.Fatalf("writer without an O_RDWR fd: %v", err)
	}
	if got := heldModes(t, reg, path); !slices.Equal(got, []string{"O_RDONLY"}) {
		t.Fatalf("after a refused writer the node holds %v", got)
	}
	addFds(t, reg, 1, path, unix.O_RDWR)
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := heldModes(t, reg, path); !slices.Equal(got, []string{"O_RDWR"}) {
		t.Fatalf("with a writer the node holds %v", got)
	}
	if _, err := n.WriteAt([]byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	g.Detach(b)
	if got := heldModes(t, reg, path); !slices.Equal(got, []string{"O_RDONLY"}) {
		t.Fatalf("after the writer left the node holds %v", got)
	}
	if data, _ := os.ReadFile(path); string(data[:5]) != "hello" {
		t.Fatal("write lost")
	}
}

// TestReopenTransaction: two nodes go read-write together; when the
// second cannot, the first is left exactly as it was.
func TestReopenTransaction(t *testing.T) {
	g, reg := fixture(t)
	pathA, pathB := image(t, 4096), image(t, 4096)
	addFds(t, reg, 1, pathA, unix.O_RDONLY, unix.O_RDWR)
	addFds(t, reg, 2, pathB, unix.O_RDONLY)
	for _, o := range []string{
		`{"driver":"file","node-name":"a","read-only":true,"filename":"/dev/fdset/1"}`,
		`{"driver":"file","node-name":"b","read-only":true,"filename":"/dev/fdset/2"}`,
	} {
		if _, err := g.Add(opts(t, "%s", o)); err != nil {
			t.Fatal(err)
		}
	}
	both := []block.Options{
		opts(t, `{"driver":"file","node-name":"a","read-only":false,"filename":"/dev/fdset/1"}`),
		opts(t, `{"driver":"file","node-name":"b","read-only":false,"filename":"/dev/fdset/2"}`),
	}
	before := fdtest.Count()
	if err := g.Reopen(both); !errors.Is(err, unix.EACCES) || !strings.Contains(err.Error(), "fdset 2") {
		t.Fatalf("reopen with no O_RDWR fd in set 2: %v", err)
	}
	if got := heldModes(t, reg, pathA); !slices.Equal(got, []string{"O_RDONLY"}) || fdtest.Count() != before {
		t.Fatalf("after the failed transaction a holds %v (fds %d, were %d)", got, fdtest.Count(), before)
	}
	if a, _ := g.Node("a"); !a.ReadOnly() {
		t.Fatal("a changed")
	}
	addFds(t, reg, 2, pathB, unix.O_RDWR)
	if err := g.Reopen(both); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{pathA, pathB} {
		if got := heldModes(t, reg, p); !slices.Equal(got, []string{"O_RDWR"}) {
			t.Fatalf("after reopen %s held as %v", p, got)
		}
	}
	// And back, with O_DIRECT where the file system has it.
	back := opts(t, `{"driver":"file","node-name":"a","read-only":true,"filename":"/dev/fdset/1"}`)
	if err := g.Reopen([]block.Options{back}); err != nil {
		t.Fatal(err)
	}
	if got := heldModes(t, reg, pathA); !slices.Equal(got, []string{"O_RDONLY"}) {
		t.Fatalf("back to read-only: %v", got)
	}
	direct := opts(t, `{"driver":"file","node-name":"a","read-only":true,"cache":{"direct":true},"filename":"/dev/fdset/1"}`)
	if err := g.Reopen([]block.Options{direct}); !errors.Is(err, unix.EACCES) {
		t.Fatalf("O_DIRECT with no O_DIRECT fd in the set: %v", err)
	}
}

func TestReopenErrors(t *testing.T) {
	g, _ := fixture(t)
	path := image(t, 4096)
	for _, o := range []string{
		fmt.Sprintf(`{"driver":"file","node-name":"f","filename":%q}`, path),
		`{"driver":"raw","node-name":"r","file":"f"}`,
		`{"driver":"null-co","node-name":"n","size":4096}`,
	} {
		if _, err := g.Add(opts(t, "%s", o)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{`{"driver":"file","node-name":"nosuch","filename":"x"}`, "Failed to find node with node-name='nosuch'"},
		{`{"driver":"file","node-name":"f","filename":"/other"}`, "Cannot change the option 'filename'"},
		{`{"driver":"null-co","node-name":"f"}`, "Cannot change the option 'driver'"},
		{fmt.Sprintf(`{"driver":"file","node-name":"f","filename":%q,"bogus":1}`, path), "Parameter 'options[0].bogus' is unexpected"},
		{fmt.Sprintf(`{"driver":"file","node-name":"f","filename":%q,"read-only":"x"}`, path), "Invalid parameter type for 'options[0].read-only', expected: boolean"},
		{`{"driver":"null-co","node-name":"n"}`, "Option 'size' cannot be reset to its default value"},
		{`{"driver":"raw","node-name":"r"}`, "Parameter 'options[0].file' is missing"},
		{`{"driver":"raw","node-name":"r","file":"nosuch"}`, "Cannot find device='' nor node-name='nosuch'"},
		{`{"driver":"file","node-name":"f"}`, "Parameter 'options[0].filename' is missing"},
	} {
		if err := g.Reopen([]block.Options{opts(t, "%s", tc.in)}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Reopen(%s) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

// TestIOWhileReopening runs reads and writes while the node flips between
// O_DIRECT and buffered IO: every request sees one fd or the other, whole.
func TestIOWhileReopening(t *testing.T) {
	g, _ := fixture(t)
	path := image(t, 1<<20)
	n, err := g.Add(opts(t, `{"driver":"file","node-name":"f","filename":%q}`, path))
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Detach(b)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			buf := make([]byte, 1000) // unaligned on purpose
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				off := int64(w*200000 + i%100*1000)
				for j := range buf {
					buf[j] = byte(w + i)
				}
				if _, err := n.WriteAt(buf, off); err != nil {
					t.Error(err)
					return
				}
				got := make([]byte, len(buf))
				if _, err := n.ReadAt(got, off); err != nil || !bytes.Equal(got, buf) {
					t.Errorf("worker %d: read back mismatch at %d: %v", w, off, err)
					return
				}
			}
		}(w)
	}
	for i := 0; i < 50; i++ {
		direct := i%2 == 0
		o := opts(t, `{"driver":"file","node-name":"f","cache":{"direct":%v},"filename":%q}`, direct, path)
		if err := g.Reopen([]block.Options{o}); err != nil {
			t.Logf("reopen direct=%v: %v (file system without O_DIRECT?)", direct, err)
			break
		}
	}
	close(stop)
	wg.Wait()
}

func TestDiscardZeroesAndStatus(t *testing.T) {
	g, _ := fixture(t)
	path := image(t, 0)
	os.Truncate(path, 1<<20)
	n, err := g.Add(opts(t, `{"driver":"file","node-name":"f","discard":"unmap","detect-zeroes":"unmap","filename":%q}`, path))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := g.Attach("", n, block.Perm{Write: true})
	defer g.Detach(b)
	st, l, err := n.BlockStatus(0, 1<<20)
	if err != nil || st.Data || !st.Zero || l != 1<<20 {
		t.Fatalf("sparse file status: %+v %d %v", st, l, err)
	}
	n.WriteAt(bytes.Repeat([]byte{1}, 65536), 65536)
	st, l, _ = n.BlockStatus(65536, 1<<20-65536)
	if !st.Data || l != 65536 {
		t.Fatalf("after a write: %+v %d", st, l)
	}
	if err := n.Discard(65536, 65536); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 65536)
	n.ReadAt(got, 65536)
	if !bytes.Equal(got, make([]byte, 65536)) {
		t.Fatal("discarded range does not read as zeroes")
	}
	// detect-zeroes=unmap turns an all-zero write into a hole.
	n.WriteAt(bytes.Repeat([]byte{2}, 65536), 0)
	n.WriteAt(make([]byte, 65536), 0)
	if st, _, _ := n.BlockStatus(0, 65536); st.Data {
		t.Fatalf("zero write was not detected: %+v", st)
	}
}

func TestNullCo(t *testing.T) {
	g, _ := fixture(t)
	n, err := g.Add(opts(t, `{"driver":"null-co","node-name":"n","size":1048576,"read-zeroes":true}`))
	if err != nil {
		t.Fatal(err)
	}
	buf := bytes.Repeat([]byte{9}, 512)
	if _, err := n.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, make([]byte, 512)) {
		t.Fatalf("read-zeroes: %v", err)
	}
	if n.Length() != 1<<20 {
		t.Fatalf("size %d", n.Length())
	}
}

func TestKeyvalOptions(t *testing.T) {
	g, _ := fixture(t)
	path := image(t, 8192)
	o := block.FromKeyval(map[string]any{
		"driver": "raw", "node-name": "k", "offset": "4k", "read-only": "on",
		"file": map[string]any{"driver": "file", "filename": path},
	})
	n, err := g.Add(o)
	if err != nil {
		t.Fatal(err)
	}
	if n.Length() != 4096 || !n.ReadOnly() || !n.Child("file").ReadOnly() {
		t.Fatalf("keyval node: length %d ro %v child ro %v", n.Length(), n.ReadOnly(), n.Child("file").ReadOnly())
	}
}

// TestWriteSharing: one writer per node unless every writer shares, and a
// format's writer is its file's writer too.
func TestWriteSharing(t *testing.T) {
	g, _ := fixture(t)
	path := image(t, 4096)
	f, err := g.Add(opts(t, `{"driver":"file","node-name":"f","filename":%q}`, path))
	if err != nil {
		t.Fatal(err)
	}
	r1, _ := g.Add(opts(t, `{"driver":"raw","node-name":"r1","file":"f"}`))
	r2, _ := g.Add(opts(t, `{"driver":"raw","node-name":"r2","file":"f"}`))
	b1, err := g.Attach("a", r1, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Attach("b", r2, block.Perm{Write: true}); err == nil || !strings.Contains(err.Error(), "'f'") {
		t.Fatalf("second writer through another raw node: %v", err)
	}
	if _, err := g.Attach("c", r2, block.Perm{}); err != nil {
		t.Fatalf("a reader beside a writer: %v", err)
	}
	g.Detach(b1)
	s1, err := g.Attach("s1", f, block.Perm{Write: true, ShareWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Attach("s2", f, block.Perm{Write: true, ShareWrite: true}); err != nil {
		t.Fatalf("two sharing writers: %v", err)
	}
	if _, err := g.Attach("x", f, block.Perm{Write: true}); err == nil {
		t.Fatal("an exclusive writer beside sharing ones")
	}
	g.Detach(s1)
}

// TestNoODirect: cache.direct on a file system without O_DIRECT (ramfs)
// is a clear error. Needs root to mount ramfs; skipped otherwise.
func TestNoODirect(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("ramfs", dir, "ramfs", 0, ""); err != nil {
		t.Skipf("cannot mount ramfs here (%v): skipping the no-O_DIRECT case", err)
	}
	defer unix.Unmount(dir, 0)
	g, _ := fixture(t)
	path := filepath.Join(dir, "img")
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := g.Add(opts(t, `{"driver":"file","node-name":"f","cache":{"direct":true},"filename":%q}`, path))
	if err == nil || err.Error() != "Could not open '"+path+"': filesystem does not support O_DIRECT" {
		t.Fatalf("O_DIRECT on ramfs: %v", err)
	}
	if len(g.Nodes()) != 0 {
		t.Fatal("a node was left")
	}
}

// TestReopenInlineChildFollows: a child made inline is reopened with its
// parent and takes what it inherits (read-only here); one given new
// options inline takes those.
func TestReopenInlineChildFollows(t *testing.T) {
	g, reg := fixture(t)
	path := image(t, 4096)
	r, err := g.Add(opts(t, `{"driver":"raw","node-name":"r","file":{"driver":"file","filename":%q}}`, path))
	if err != nil {
		t.Fatal(err)
	}
	child := r.Child("file").Name()
	if got := heldModes(t, reg, path); !slices.Equal(got, []string{"O_RDWR"}) {
		t.Fatalf("before: %v", got)
	}
	if err := g.Reopen([]block.Options{opts(t, `{"driver":"raw","node-name":"r","read-only":true,"file":%q}`, child)}); err != nil {
		t.Fatal(err)
	}
	if c := r.Child("file"); !c.ReadOnly() || c.Name() != child {
		t.Fatalf("the inline child did not follow its parent: ro=%v name=%s", c.ReadOnly(), c.Name())
	}
	if got := heldModes(t, reg, path); !slices.Equal(got, []string{"O_RDONLY"}) {
		t.Fatalf("after: %v", got)
	}
	// New options inline for the same child: read-write again, O_DIRECT too.
	err = g.Reopen([]block.Options{opts(t, `{"driver":"raw","node-name":"r","file":{"driver":"file","filename":%q,"cache":{"direct":true}}}`, path)})
	if err != nil {
		t.Fatal(err)
	}
	if got := heldModes(t, reg, path); !slices.Equal(got, []string{"O_RDWR|O_DIRECT"}) {
		t.Fatalf("after inline options: %v", got)
	}
	for _, tc := range []struct{ in, want string }{
		{fmt.Sprintf(`{"driver":"raw","node-name":"r","file":{"driver":"null-co"}}`), "Cannot change the option 'file.driver'"},
		{fmt.Sprintf(`{"driver":"raw","node-name":"r","file":{"driver":"file","node-name":"x","filename":%q}}`, path), "Cannot change the option 'node-name'"},
		{fmt.Sprintf(`{"driver":"raw","node-name":"r","file":{"driver":"file","filename":"/elsewhere"}}`), "Cannot change the option 'file.filename'"},
	} {
		if err := g.Reopen([]block.Options{opts(t, "%s", tc.in)}); err == nil || err.Error() != tc.want {
			t.Errorf("Reopen(%s) = %v, want %q", tc.in, err, tc.want)
		}
	}
}
