package block_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// qcow2Header writes the first bytes of a qcow2 image (what the probe
// reads) padded to size.
func qcow2Header(t *testing.T, dir string, size int64) string {
	t.Helper()
	path := filepath.Join(dir, "img")
	hdr := []byte{'Q', 'F', 'I', 0xfb, 0, 0, 0, 3}
	if err := os.WriteFile(path, hdr, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOpenProbe(t *testing.T) {
	fdtest.Check(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "raw")
	if err := os.WriteFile(raw, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	qc := qcow2Header(t, dir, 4096)
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	g := block.NewGraph(reg)
	defer g.Close()
	file := func(p string, ro bool) block.Options {
		return block.Options{"read-only": ro, "file": block.Options{"driver": "file", "filename": p}}
	}
	for _, tc := range []struct {
		path   string
		ro     bool
		policy block.ProbePolicy
		format string // "": refused
	}{
		{raw, false, block.ProbeRawOnly, "raw"},
		{raw, true, block.ProbeAny, "raw"},
		{qc, false, block.ProbeRawOnly, ""},
	} {
		n := len(g.Nodes())
		op, err := g.Open(file(tc.path, tc.ro), tc.policy)
		if tc.format == "" {
			var pf *block.ProbedFormatError
			if !errors.As(err, &pf) || pf.Format != "qcow2" || pf.Filename != tc.path {
				t.Errorf("%s for writing: %v, want a ProbedFormatError naming qcow2", tc.path, err)
			}
			if len(g.Nodes()) != n {
				t.Errorf("a refused open left %d nodes behind", len(g.Nodes())-n)
			}
			continue
		}
		if err != nil || !op.Probed || op.Format != tc.format || op.Node.Driver() != tc.format {
			t.Errorf("%s: %+v, %v", tc.path, op, err)
		}
		if op.ProbedRaw() != (tc.format == "raw") {
			t.Errorf("%s: ProbedRaw %v", tc.path, op.ProbedRaw())
		}
	}
	// A format given is opened as given, unknown ones refused in QEMU's words.
	if _, err := g.Open(block.Options{"driver": "nosuch"}, block.ProbeAny); err == nil || err.Error() != "Unknown driver 'nosuch'" {
		t.Errorf("unknown driver: %v", err)
	}
}

// TestProbeSameEverywhere: a header that only the bytes past ProbeSize
// would tell apart probes the same through a node and through a file.
func TestProbeSameEverywhere(t *testing.T) {
	fdtest.Check(t)
	dir := t.TempDir()
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	g := block.NewGraph(reg)
	defer g.Close()
	for _, size := range []int64{0, 100, block.ProbeSize, 4096} {
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if size >= 8 {
			path = qcow2Header(t, dir, size)
		}
		viaFile, err1 := block.ProbeFile(reg, path)
		n, err := g.Add(block.Options{"driver": "file", "filename": path, "read-only": true})
		if err != nil {
			t.Fatal(err)
		}
		viaNode, err2 := block.ProbeNode(n)
		g.Delete(n.Name())
		if err1 != nil || err2 != nil || viaFile != viaNode {
			t.Errorf("size %d: file says %q (%v), node says %q (%v)", size, viaFile, err1, viaNode, err2)
		}
	}
	// And as qemu-img probes a real image.
	if _, err := exec.LookPath("qemu-img"); err == nil {
		img := filepath.Join(dir, "real.qcow2")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, "1M").CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if f, err := block.ProbeFile(reg, img); err != nil || f != "qcow2" {
			t.Errorf("qemu-img's qcow2 probes as %q, %v", f, err)
		}
	}
}
