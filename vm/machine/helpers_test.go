package machine

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// needTool skips without a tool, except under CI=true.
func needTool(t testing.TB, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (CI=true)", tool)
		}
		t.Skipf("%s not installed; apt-get install qemu-utils", tool)
	}
}

func runTool(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// image makes an image of the format ("raw" or "qcow2") and size in a
// temporary directory.
func image(t testing.TB, format string, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk."+format)
	if format == "raw" {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(size)
		f.Close()
		return p
	}
	needTool(t, "qemu-img")
	runTool(t, "qemu-img", "create", "-q", "-f", format, p, strconv.FormatInt(size, 10))
	return p
}

func newGraph(t testing.TB) *block.Graph {
	g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
	t.Cleanup(func() { g.Close() })
	return g
}

func addImage(t testing.TB, g *block.Graph, name, format, path string) *block.Node {
	t.Helper()
	n, err := g.AddRoot(block.Options{"driver": format, "node-name": name,
		"file": map[string]any{"driver": "file", "filename": path}})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newMachine(t testing.TB, g *block.Graph, paused bool) *Machine {
	t.Helper()
	m, err := New(g, 64<<20, paused)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

// checkFds checks at cleanup that the test left no fd open; registered
// first, it runs last.
func checkFds(t *testing.T) {
	fdtest.Check(t)
}

// corruptDisk is a test-only protocol driver over memory that spoils the
// first write covering offset at: it drops it, flips a byte of it at at,
// or writes it 4096 bytes before where it belongs.
type corruptDisk struct {
	mu    sync.Mutex
	b     []byte
	mode  string
	at    int64
	fired int
}

func (c *corruptDisk) driver() *block.Driver {
	return &block.Driver{Name: "corrupt", Open: func(*block.OpenContext) (block.Image, error) { return corruptImage{c}, nil }}
}

type corruptImage struct{ c *corruptDisk }

func (i corruptImage) ReadAt(p []byte, off int64) (int, error) {
	i.c.mu.Lock()
	defer i.c.mu.Unlock()
	return copy(p, i.c.b[off:]), nil
}

func (i corruptImage) WriteAt(p []byte, off int64) (int, error) {
	c := i.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fired == 0 && off <= c.at && c.at < off+int64(len(p)) {
		c.fired++
		switch c.mode {
		case "drop":
			return len(p), nil
		case "flip":
			copy(c.b[off:], p)
			c.b[c.at] ^= 0x10
			return len(p), nil
		case "misplace":
			copy(c.b[off-4096:], p)
			return len(p), nil
		}
	}
	return copy(c.b[off:], p), nil
}

func (i corruptImage) Flush() error           { return nil }
func (i corruptImage) Length() (int64, error) { return int64(len(i.c.b)), nil }
func (i corruptImage) Close() error           { return nil }
