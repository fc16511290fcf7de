package qcow2

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"minivmm/block"
	_ "minivmm/block/file"
	_ "minivmm/block/raw"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// fixture is a graph over a registry, checked for leaked fds and closed at
// the end of the test.
func fixture(t testing.TB) *block.Graph {
	t.Helper()
	fdtest.Check(t)
	return parallelFixture(t)
}

// parallelFixture is fixture for parallel subtests: the process's fd
// count is shared by all that run at once, so their parent checks it
// (with fdtest.Check before it starts them; its cleanup runs after they
// have all ended).
func parallelFixture(t testing.TB) *block.Graph {
	t.Helper()
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	t.Cleanup(func() {
		g.Close()
		reg.CloseAll()
	})
	return g
}

// qcow2Options are the options that open path as a read-only qcow2 node.
// Without image locking: these tests look at images they hold open, with
// qemu-img and with second nodes, which locks would refuse (as QEMU's
// iotests pass -U); locking has its own tests in block/file.
func qcow2Options(path string) block.Options {
	return block.Options{"driver": "qcow2", "read-only": true,
		"file": block.Options{"driver": "file", "filename": path, "locking": "off"}}
}

// openQcow2 opens path read-only in g, with extra options merged in.
func openQcow2(g *block.Graph, path string, extra block.Options) (*block.Node, error) {
	o := qcow2Options(path)
	for k, v := range extra {
		o[k] = v
	}
	return g.Add(o)
}

func writeTemp(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testImage builds small qcow2 images in memory, valid unless a test
// breaks them on purpose. Layout, in clusters: 0 header, 1 refcount
// table, 2 refcount block, 3 L1 table, 4 the first L2 table, then data.
// Refcounts are not kept exact: the read path never looks at them.
type testImage struct {
	h     header
	exts  []extension
	bname string // backing file name, placed after the extensions
	buf   []byte
	csz   int64 // the cluster size the layout was made for
}

func newTestImage(clusterBits uint32, size uint64) *testImage {
	cs := uint64(1) << clusterBits
	t := &testImage{h: header{
		Version: 3, ClusterBits: clusterBits, Size: size,
		RefcountTableOffset: cs, RefcountTableClusters: 1,
		L1TableOffset: 3 * cs, RefcountOrder: 4, HeaderLength: knownHeaderLen,
	}}
	l2Cover := cs * (cs / 8)
	t.h.L1Size = uint32((size + l2Cover - 1) / l2Cover)
	t.buf = make([]byte, 5*cs)
	t.csz = int64(cs)
	binary.BigEndian.PutUint64(t.buf[cs:], 2*cs) // refcount table -> block
	for i := uint64(0); i < 5; i++ {
		binary.BigEndian.PutUint16(t.buf[2*cs+2*i:], 1)
	}
	if t.h.L1Size > 0 {
		binary.BigEndian.PutUint64(t.buf[3*cs:], 4*cs|flagCopied) // L1[0] -> L2 at cluster 4
	}
	return t
}

func (t *testImage) cs() int64 { return t.csz }

// grow makes the buffer at least n bytes long.
func (t *testImage) grow(n int64) {
	if int64(len(t.buf)) < n {
		t.buf = append(t.buf, make([]byte, n-int64(len(t.buf)))...)
	}
}

// put writes b at file offset off.
func (t *testImage) put(off int64, b []byte) {
	t.grow(off + int64(len(b)))
	copy(t.buf[off:], b)
}

// setL2 sets entry i of the first L2 table (with extended L2, its bitmap).
func (t *testImage) setL2(i int, entry uint64, bitmap ...uint64) {
	w := int64(8)
	if t.h.extL2() {
		w = 16
	}
	off := 4*t.cs() + int64(i)*w
	binary.BigEndian.PutUint64(t.buf[off:], entry)
	if len(bitmap) > 0 {
		binary.BigEndian.PutUint64(t.buf[off+8:], bitmap[0])
	}
}

// dataCluster returns the host offset of a new data cluster filled with b
// (repeated to fill it).
func (t *testImage) dataCluster(b byte) int64 {
	off := int64(len(t.buf))
	off = (off + t.cs() - 1) &^ (t.cs() - 1)
	c := make([]byte, t.cs())
	for i := range c {
		c[i] = b
	}
	t.put(off, c)
	return off
}

// bytes encodes the header, extensions and backing name into cluster 0.
func (t *testImage) bytes() []byte {
	h := &t.h
	be := binary.BigEndian
	c0 := make([]byte, t.cs())
	be.PutUint32(c0[0:], magic)
	be.PutUint32(c0[4:], h.Version)
	be.PutUint32(c0[20:], h.ClusterBits)
	be.PutUint64(c0[24:], h.Size)
	be.PutUint32(c0[32:], h.CryptMethod)
	be.PutUint32(c0[36:], h.L1Size)
	be.PutUint64(c0[40:], h.L1TableOffset)
	be.PutUint64(c0[48:], h.RefcountTableOffset)
	be.PutUint32(c0[56:], h.RefcountTableClusters)
	be.PutUint32(c0[60:], h.NbSnapshots)
	be.PutUint64(c0[64:], h.SnapshotsOffset)
	pos := v2HeaderLen
	if h.Version >= 3 {
		be.PutUint64(c0[72:], h.IncompatibleFeatures)
		be.PutUint64(c0[80:], h.CompatibleFeatures)
		be.PutUint64(c0[88:], h.AutoclearFeatures)
		be.PutUint32(c0[96:], h.RefcountOrder)
		be.PutUint32(c0[100:], h.HeaderLength)
		if h.HeaderLength > compressionByte && len(c0) > compressionByte {
			c0[compressionByte] = h.CompressionType
		}
		pos = int(h.HeaderLength)
	}
	for _, e := range t.exts {
		if pos+8+len(e.Data) > len(c0) {
			break
		}
		be.PutUint32(c0[pos:], e.Type)
		be.PutUint32(c0[pos+4:], uint32(len(e.Data)))
		copy(c0[pos+8:], e.Data)
		pos += 8 + (len(e.Data)+7)&^7
	}
	pos += 8 // end marker
	if t.bname != "" {
		if h.BackingFileOffset == 0 {
			h.BackingFileOffset = uint64(pos)
		}
		if h.BackingFileSize == 0 {
			h.BackingFileSize = uint32(len(t.bname))
		}
		if int(h.BackingFileOffset) < len(c0) {
			copy(c0[h.BackingFileOffset:], t.bname)
		}
	}
	be.PutUint64(c0[8:], h.BackingFileOffset)
	be.PutUint32(c0[16:], h.BackingFileSize)
	out := append([]byte(nil), t.buf...)
	copy(out, c0)
	return out
}

// write stores the image in a temporary file and returns its path.
func (t *testImage) write(tb testing.TB) string {
	tb.Helper()
	return writeTemp(tb, "test.qcow2", t.bytes())
}

// readAll reads a node's whole length.
func readAll(t testing.TB, n *block.Node) []byte {
	t.Helper()
	buf := make([]byte, n.Length())
	if _, err := n.ReadAt(buf, 0); err != nil {
		t.Fatalf("read: %v", err)
	}
	return buf
}

// openCapture opens path like openQcow2 and also returns the driver's
// image, for white-box checks.
func openCapture(g *block.Graph, path string, extra block.Options) (*block.Node, *image, error) {
	n, err := openQcow2(g, path, extra)
	if err != nil {
		return nil, nil, err
	}
	return n, n.Image().(*image), nil
}

// openCaptureOpts adds a qcow2 node with options o: the node and its
// driver's image.
func openCaptureOpts(g *block.Graph, o block.Options) (*block.Node, *image, error) {
	n, err := g.Add(o)
	if err != nil {
		return nil, nil, err
	}
	return n, n.Image().(*image), nil
}
