package qcow2

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

func TestBackingPath(t *testing.T) {
	for _, tc := range []struct{ name, overlay, want string }{
		{"base.raw", "/images/top.qcow2", "/images/base.raw"},
		{"../b/base.raw", "/images/a/top.qcow2", "/images/b/base.raw"},
		{"/abs/base.raw", "/images/top.qcow2", "/abs/base.raw"},
		{"base.raw", "top.qcow2", "base.raw"},
		{"base.raw", "dir/top.qcow2", "dir/base.raw"},
		{"base.raw", "/dev/fdset/3", "base.raw"},
		{"base.raw", `json:{"driver":"file","filename":"/images/top.qcow2","locking":"off"}`, "base.raw"},
	} {
		if got := backingPath(tc.name, tc.overlay); got != tc.want {
			t.Errorf("backingPath(%q, %q) = %q, want %q", tc.name, tc.overlay, got, tc.want)
		}
	}
}

// chainImage is a qcow2 image with one data cluster at guest cluster idx
// filled with fill, over backing (with format fmt, "" for none).
func chainImage(t *testing.T, dir, name, backing, fmt string, idx int, fill byte) string {
	img := newTestImage(12, 1<<20)
	img.setL2(idx, uint64(img.dataCluster(fill))|flagCopied)
	img.bname = backing
	if fmt != "" {
		img.exts = append(img.exts, extension{Type: extBackingFormat, Data: []byte(fmt)})
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, img.bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBackingChain(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.raw"), bytes.Repeat([]byte{0xba}, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	chainImage(t, dir, "mid.qcow2", "base.raw", "raw", 1, 0x01)
	chainImage(t, dir, "nofmt.qcow2", "mid.qcow2", "qcow2", 2, 0x02)
	top := chainImage(t, dir, "top.qcow2", "nofmt.qcow2", "qcow2", 3, 0x03)

	g := fixture(t)
	n, err := openQcow2(g, top, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkRead(t, n, []expect{{0, 4096, 0xba}, {4096, 4096, 1}, {8192, 4096, 2}, {12288, 4096, 3}, {16384, 4096, 0xba}})
	for _, w := range []struct {
		off   int64
		depth int
	}{{0, 3}, {4096, 2}, {8192, 1}, {12288, 0}} {
		st, _, err := n.BlockStatus(w.off, 4096)
		if err != nil || st.Depth != w.depth || !st.Data || st.Allocated != (w.depth == 0) {
			t.Errorf("status at %d: %+v %v; want depth %d", w.off, st, err, w.depth)
		}
	}
	// Backing nodes are inline, read-only, and go with the overlay.
	nodes := len(g.Nodes())
	if nodes != 8 { // 3 qcow2 + raw, each with a file
		t.Errorf("%d nodes", nodes)
	}
	nofmt := n.Child("backing")
	if nofmt.Driver() != "qcow2" || !nofmt.ReadOnly() || nofmt.Child("backing").Driver() != "qcow2" {
		t.Errorf("chain: %s %v", nofmt.Driver(), nofmt.ReadOnly())
	}
}

func TestBackingErrors(t *testing.T) {
	dir := t.TempDir()
	self := chainImage(t, dir, "self.qcow2", "self.qcow2", "qcow2", 0, 1)
	chainImage(t, dir, "a.qcow2", "b.qcow2", "qcow2", 0, 1)
	a2 := chainImage(t, dir, "b.qcow2", "a.qcow2", "qcow2", 0, 1)
	noFmt := chainImage(t, dir, "vmdk.qcow2", "base.raw", "vmdk", 0, 1)
	missing := chainImage(t, dir, "missing.qcow2", "nowhere.raw", "raw", 0, 1)
	jsonName := chainImage(t, dir, "json.qcow2", `json:{"file":{"driver":"file","filename":"base.raw"}}`, "", 0, 1)
	probed := chainImage(t, dir, "probed.qcow2", "a.qcow2", "", 0, 1)
	if err := os.WriteFile(filepath.Join(dir, "base.raw"), make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	rawProbed := chainImage(t, dir, "rawprobed.qcow2", "base.raw", "", 0, 1)
	for _, tc := range []struct{ path, want string }{
		{self, "Backing file chain of '" + self + "' loops back to it"},
		{a2, "loops back to it"},
		{noFmt, "Could not open backing file: Unknown driver 'vmdk'"},
		{missing, "Could not open backing file: Could not open '" + filepath.Join(dir, "nowhere.raw") + "': No such file or directory"},
		{jsonName, "does not say the format of 'json:"},
		{probed, "minivmm does not take a probed qcow2 for a backing file"},
	} {
		g := fixture(t)
		_, err := openQcow2(g, tc.path, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %q", filepath.Base(tc.path), err, tc.want)
		}
		if len(g.Nodes()) != 0 {
			t.Errorf("%s: a failed open left %d nodes", filepath.Base(tc.path), len(g.Nodes()))
		}
		// The image opens without its backing file.
		if _, err := openQcow2(g, tc.path, block.Options{"backing": nil}); err != nil {
			t.Errorf("%s with backing null: %v", filepath.Base(tc.path), err)
		}
	}
	// Without a format in the header, a backing file probed as raw is fine.
	g := fixture(t)
	n, err := openQcow2(g, rawProbed, nil)
	if err != nil {
		t.Fatalf("raw backing without a recorded format: %v", err)
	}
	if d := n.Child("backing").Driver(); d != "raw" {
		t.Errorf("backing opened as %q", d)
	}
	// A json: name opens its description as given, read-only, the
	// header's format as the driver where it names none.
	for _, c := range []struct{ name, format string }{
		{`json:{"driver":"raw","file":{"driver":"file","filename":"` + filepath.Join(dir, "base.raw") + `"}}`, ""},
		{`json:{'file.driver':'file','file.filename':'` + filepath.Join(dir, "base.raw") + `'}`, "raw"},
	} {
		img := chainImage(t, dir, "json2.qcow2", c.name, c.format, 0, 1)
		g := fixture(t)
		n, err := openQcow2(g, img, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		b := n.Child("backing")
		if b.Driver() != "raw" || !b.ReadOnly() || b.Child("file").Filename() != filepath.Join(dir, "base.raw") {
			t.Errorf("%s: backing %s read-only %v", c.name, b.Driver(), b.ReadOnly())
		}
	}
}

// TestBackingOverFdset: an overlay opened through an fdset resolves a
// relative backing name as given (there is no directory), and an absolute
// one opens through the same registry, which may refuse it.
func TestBackingOverFdset(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, bytes.Repeat([]byte{0xba}, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	abs := chainImage(t, dir, "abs.qcow2", base, "raw", 1, 1)
	rel := chainImage(t, dir, "rel.qcow2", "base.raw", "raw", 1, 1)
	for _, tc := range []struct {
		path      string
		fdsetOnly bool
		want      string // "" success
	}{
		{abs, false, ""},
		{abs, true, "Could not open backing file: Could not open '" + base + "'"},
		{rel, false, "Could not open backing file: Could not open 'base.raw': No such file or directory"},
	} {
		func() {
			fdtest.Check(t)
			reg := qemuopen.New(qemuopen.Config{FdsetOnly: tc.fdsetOnly})
			g := block.NewGraph(reg)
			defer func() {
				g.Close()
				reg.CloseAll()
			}()
			fd, err := unix.Open(tc.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			set := int64(1)
			if _, _, err := reg.AddFd(fd, qemuopen.AddRequest{SetID: &set}); err != nil {
				t.Fatal(err)
			}
			n, err := openQcow2(g, "/dev/fdset/1", nil)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("%s: %v", filepath.Base(tc.path), err)
			case tc.want == "":
				checkRead(t, n, []expect{{0, 4096, 0xba}, {4096, 4096, 1}})
			case err == nil || !strings.Contains(err.Error(), tc.want):
				t.Errorf("%s (fdset-only %v): %v; want %q", filepath.Base(tc.path), tc.fdsetOnly, err, tc.want)
			}
		}()
	}
}

// A backing format no driver has is QEMU's "Unknown driver" (qemu-io
// says so for an image whose header names 'foo'; iotest 114).
func TestBackingUnknownFormat(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.raw"), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	top := chainImage(t, dir, "top.qcow2", "base.raw", "foo", 1, 0x01)
	g := fixture(t)
	_, err := openQcow2(g, top, nil)
	if want := "Could not open backing file: Unknown driver 'foo'"; err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
}
