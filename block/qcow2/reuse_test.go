package qcow2

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/internal/fdtest"
)

// reuseOp is a guest operation of a reuse script, as qemu-io's command
// and as minivmm does it on a node.
type reuseOp struct {
	kind    string // "write", "zero", "zero-unmap", "discard", "snapshot-delete"
	off, n  int64
	pattern byte
}

func (o reuseOp) qemuIO() string {
	switch o.kind {
	case "write":
		return fmt.Sprintf("write -P %d %d %d", o.pattern, o.off, o.n)
	case "zero":
		return fmt.Sprintf("write -z %d %d", o.off, o.n)
	case "zero-unmap":
		return fmt.Sprintf("write -z -u %d %d", o.off, o.n)
	case "discard":
		return fmt.Sprintf("discard %d %d", o.off, o.n)
	}
	panic(o.kind)
}

func (o reuseOp) do(n *block.Node, qimg *image) error {
	switch o.kind {
	case "write":
		_, err := n.WriteAt(bytes.Repeat([]byte{o.pattern}, int(o.n)), o.off)
		return err
	case "zero":
		return n.WriteZeroes(o.off, o.n, false)
	case "zero-unmap":
		return n.WriteZeroes(o.off, o.n, true)
	case "discard":
		return n.Discard(o.off, o.n)
	}
	panic(o.kind)
}

// TestReuseMatchesQemu runs scripts of writes, zero writes and discards
// in one session with qemu-io and with minivmm on copies of one image:
// the clusters freed are reused alike (qemu-img map, with host offsets,
// is the same for both), both images are clean, and the holes the
// discards punched in the file (pass-discard-request, on with
// discard=unmap, as qemu-io opens) are the same.
func TestReuseMatchesQemu(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	const k = 1 << 16
	w := func(off, n int64, p byte) reuseOp { return reuseOp{"write", off, n, p} }
	for _, tc := range []struct {
		name   string
		create string // qemu-img create -o
		size   int64
		setup  []string // qemu-io commands on the image first (both copies)
		ops    []reuseOp
	}{
		{name: "discard then write reuses", create: "cluster_size=65536", size: 64 << 20, ops: []reuseOp{
			w(0, 8*k, 1), {"discard", 0, 4 * k, 0}, w(32<<20, 2*k, 2), w(40<<20, 2*k, 3), w(48<<20, k, 4)}},
		{name: "a gap too small is skipped", create: "cluster_size=65536", size: 64 << 20, ops: []reuseOp{
			w(0, 8*k, 1), {"discard", 2 * k, k, 0}, w(16<<20, 3*k, 2), w(20<<20, k, 3), {"discard", 5 * k, 2 * k, 0}, w(24<<20, k, 4)}},
		{name: "066 preallocated zero clusters", create: "cluster_size=65536", size: 64<<20 + 512,
			setup: []string{"write -P 42 1M 256k"},
			ops:   []reuseOp{{"zero", 1 << 20, 256 << 10, 0}, w((1024+32)<<10, 192<<10, 23)}},
		{name: "zero-unmap and rewrite", create: "cluster_size=4096", size: 8 << 20, ops: []reuseOp{
			w(0, 1<<20, 5), {"zero-unmap", 256 << 10, 512 << 10, 0}, w(4<<20, 300<<10, 6), w(100<<10, 10000, 7)}},
		{name: "250 metadata preallocation", create: "cluster_size=1M,preallocation=metadata", size: 2100 << 20, ops: []reuseOp{
			{"discard", 0, 10 << 20, 0}, {"discard", 2090 << 20, 10 << 20, 0}, w(2090<<20, 10<<20, 1), w(0, 10<<20, 2)}},
		{name: "v2 discard and write", create: "cluster_size=4096,compat=0.10", size: 4 << 20, ops: []reuseOp{
			w(0, 64<<10, 1), {"discard", 8 << 10, 16 << 10, 0}, w(1<<20, 8<<10, 2), w(2<<20, 12<<10, 3)}},
		{name: "across L2 tables", create: "cluster_size=4096", size: 16 << 20, ops: []reuseOp{
			w(0, 2<<20, 1), {"discard", 512 << 10, 1 << 20, 0}, w(6<<20, 3<<20, 2), w(12<<20, 4096, 3)}},
		// (Extended L2 is left out: minivmm's discard of whole clusters
		// there leaves them unallocated where QEMU's keeps them
		// allocated-zero in the bitmap, a difference of write_subcluster.go.)
		{name: "partial writes into new clusters", create: "cluster_size=65536", size: 16 << 20, ops: []reuseOp{
			w(0, 4*k, 1), {"discard", k, 2 * k, 0}, w(8<<20+512, 1000, 2), w(9<<20+k/2, 2*k, 3), w(12<<20, 5000, 4)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			theirs := filepath.Join(dir, "qemu.qcow2")
			ours := filepath.Join(dir, "ours.qcow2")
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", tc.create, theirs, fmt.Sprint(tc.size))
			if len(tc.setup) > 0 {
				qemuIO(t, theirs, tc.setup...)
			}
			copyFile(t, theirs, ours)

			var cmds []string
			for _, o := range tc.ops {
				cmds = append(cmds, o.qemuIO())
			}
			qemuIO(t, theirs, cmds...)

			g := fixture(t)
			o := qcow2Options(ours)
			o["read-only"], o["discard"] = false, "unmap"
			n, err := g.Add(o)
			if err != nil {
				t.Fatal(err)
			}
			b, err := g.Attach("", n, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			qimg := n.Image().(*image)
			for _, op := range tc.ops {
				if err := op.do(n, qimg); err != nil {
					t.Fatalf("%s: %v", op.qemuIO(), err)
				}
			}
			g.Detach(b)
			if err := g.Delete(n.Name()); err != nil {
				t.Fatal(err)
			}

			checkClean(t, dir, ours)
			checkClean(t, dir, theirs)
			if a, b := run(t, dir, "qemu-img", "map", "--output=json", theirs), run(t, dir, "qemu-img", "map", "--output=json", ours); !bytes.Equal(a, b) {
				t.Errorf("maps differ:\nqemu: %s\nours: %s", a, b)
			}
			if a, b := fileExtents(t, theirs), fileExtents(t, ours); a != b {
				t.Errorf("files' allocated extents differ:\nqemu: %s\nours: %s", a, b)
			}
			run(t, dir, "qemu-img", "compare", "-q", theirs, ours) // the guest sees the same

		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	// Sparse as the original: holes stay holes (qemu-img create leaves
	// the tail of a preallocated image one).
	for off := int64(0); ; {
		data, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			break
		}
		hole, err := unix.Seek(int(src.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.NewOffsetWriter(dst, data), io.NewSectionReader(src, data, hole-data)); err != nil {
			t.Fatal(err)
		}
		off = hole
	}
	st, err := src.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Truncate(st.Size()); err != nil {
		t.Fatal(err)
	}
}

// fileExtents lists a file's length and its data extents (SEEK_DATA and
// SEEK_HOLE), in 64 KiB units: where it has space allocated.
func fileExtents(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "length %d:", st.Size())
	for off := int64(0); off < st.Size(); {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			break
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, " %#x-%#x", data, hole)
		off = hole
	}
	return sb.String()
}

// checkClean runs qemu-img check on img: no errors, no leaks.
func checkClean(t *testing.T, dir, img string) {
	t.Helper()
	out := run(t, dir, "qemu-img", "check", img)
	if !bytes.Contains(out, []byte("No errors were found on the image.")) || bytes.Contains(out, []byte("leaked")) {
		t.Errorf("qemu-img check %s:\n%s", filepath.Base(img), out)
	}
}

// TestSnapshotDeleteDiscardsMatchesQemu deletes an internal snapshot whose
// clusters the active image no longer shares, with qemu-img snapshot -d
// and with minivmm: the freed clusters are discarded in the file as
// QEMU's are with pass-discard-snapshot (on by default), and kept with it
// off; the maps stay equal, and later writes reuse the clusters alike.
func TestSnapshotDeleteDiscardsMatchesQemu(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	for _, pass := range []bool{true, false} {
		t.Run(fmt.Sprintf("pass-discard-snapshot=%v", pass), func(t *testing.T) {
			dir := t.TempDir()
			theirs := filepath.Join(dir, "qemu.qcow2")
			ours := filepath.Join(dir, "ours.qcow2")
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", theirs, "32M")
			qemuIO(t, theirs, "write -P 1 0 2M", "write -P 2 8M 1M")
			run(t, dir, "qemu-img", "snapshot", "-c", "s1", theirs)
			qemuIO(t, theirs, "write -P 3 0 2M", "write -P 4 8M 512k")
			copyFile(t, theirs, ours)
			before := fileBlocks(t, ours)

			onOff := map[bool]string{true: "on", false: "off"}[pass]
			run(t, dir, "qemu-img", "snapshot", "-d", "s1", "--image-opts",
				"driver=qcow2,pass-discard-snapshot="+onOff+",file.driver=file,file.filename="+theirs)
			qemuIO(t, theirs, "write -P 5 16M 1M")

			g := fixture(t)
			o := qcow2Options(ours)
			o["read-only"], o["pass-discard-snapshot"] = false, pass
			n, err := g.Add(o)
			if err != nil {
				t.Fatal(err)
			}
			be, err := g.Attach("", n, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Image().(*image).DeleteSnapshot("1", "s1"); err != nil {
				t.Fatal(err)
			}
			if _, err := n.WriteAt(bytes.Repeat([]byte{5}, 1<<20), 16<<20); err != nil {
				t.Fatal(err)
			}
			g.Detach(be)
			if err := g.Delete(n.Name()); err != nil {
				t.Fatal(err)
			}

			checkClean(t, dir, ours)
			checkClean(t, dir, theirs)
			if a, b := run(t, dir, "qemu-img", "map", "--output=json", theirs), run(t, dir, "qemu-img", "map", "--output=json", ours); !bytes.Equal(a, b) {
				t.Errorf("maps differ:\nqemu: %s\nours: %s", a, b)
			}
			a, b := fileExtents(t, theirs), fileExtents(t, ours)
			if a != b {
				t.Errorf("files' allocated extents differ:\nqemu: %s\nours: %s", a, b)
			}
			if after := fileBlocks(t, ours); after < before != pass {
				t.Errorf("pass-discard-snapshot=%v, but the file has %d bytes allocated, %d before", pass, after, before)
			}
			run(t, dir, "qemu-img", "compare", "-q", theirs, ours)
		})
	}
}

// fileBlocks is how many bytes of path's file have space (its extents).
func fileBlocks(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestPassDiscardRequestMatchesQemu discards with pass-discard-request
// on and off (and by default: on with discard=unmap, as qemu-io opens),
// with qemu-io and with minivmm: the file gives the space back, or keeps
// it, alike.
func TestPassDiscardRequestMatchesQemu(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	for _, tc := range []struct {
		name  string
		opt   any // pass-discard-request; nil: the default
		freed bool
	}{
		{"default", nil, true},
		{"on", true, true},
		{"off", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			theirs := filepath.Join(dir, "qemu.qcow2")
			ours := filepath.Join(dir, "ours.qcow2")
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", theirs, "16M")
			qemuIO(t, theirs, "write -P 1 0 4M")
			copyFile(t, theirs, ours)
			before := fileBlocks(t, ours)

			opts := "driver=qcow2,file.driver=file,file.filename=" + theirs
			if tc.opt != nil {
				opts += fmt.Sprintf(",pass-discard-request=%v", map[bool]string{true: "on", false: "off"}[tc.opt.(bool)])
			}
			run(t, dir, "qemu-io", "--image-opts", "-c", "discard 1M 2M", "-c", "write -z -u 3M 512k", opts)

			g := fixture(t)
			o := qcow2Options(ours)
			o["read-only"], o["discard"] = false, "unmap"
			if tc.opt != nil {
				o["pass-discard-request"] = tc.opt
			}
			n, err := g.Add(o)
			if err != nil {
				t.Fatal(err)
			}
			be, err := g.Attach("", n, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Discard(1<<20, 2<<20); err != nil {
				t.Fatal(err)
			}
			if err := n.WriteZeroes(3<<20, 512<<10, true); err != nil {
				t.Fatal(err)
			}
			g.Detach(be)
			if err := g.Delete(n.Name()); err != nil {
				t.Fatal(err)
			}

			checkClean(t, dir, ours)
			if a, b := fileExtents(t, theirs), fileExtents(t, ours); a != b {
				t.Errorf("files' allocated extents differ:\nqemu: %s\nours: %s", a, b)
			}
			if after := fileBlocks(t, ours); (after <= before-(2<<20)) != tc.freed {
				t.Errorf("%d bytes allocated, %d before", after, before)
			}
			run(t, dir, "qemu-img", "compare", "-q", theirs, ours)
		})
	}
}

// TestPassDiscardDataFile: with an external data file the guest's
// discards (pass-discard-request, on with discard=unmap) give the data
// file's space back, and with the option off keep it; the image stays
// clean and reads as zeroes there. (QEMU 7.2 queues such discards for
// its qcow2 file, at the data file's offsets, instead.)
func TestPassDiscardDataFile(t *testing.T) {
	fdtest.Check(t)
	for _, pass := range []bool{true, false} {
		t.Run(fmt.Sprint(pass), func(t *testing.T) {
			img, data := dfImage(t, "")
			qemuIO(t, img, "write -P 0x5c 0 1M")
			before := fileBlocks(t, data)
			g := fixture(t)
			o := qcow2Options(img)
			o["read-only"], o["discard"], o["pass-discard-request"] = false, "unmap", pass
			n, err := g.Add(o)
			if err != nil {
				t.Fatal(err)
			}
			be, err := g.Attach("", n, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Discard(0, 512<<10); err != nil {
				t.Fatal(err)
			}
			g.Detach(be)
			if err := g.Delete(n.Name()); err != nil {
				t.Fatal(err)
			}
			if after := fileBlocks(t, data); (after <= before-(512<<10)) != pass {
				t.Errorf("the data file has %d bytes allocated, %d before", after, before)
			}
			checkClean(t, filepath.Dir(img), img)
			want := append(make([]byte, 512<<10), bytes.Repeat([]byte{0x5c}, 512<<10)...)
			if got := qemuRaw(t, filepath.Dir(img), img); !bytes.Equal(got, want) {
				t.Errorf("reads differ at %d", firstDiff(got, want))
			}
		})
	}
}

// TestPassDiscardReopen: a reopen turns pass-discard-request off and on
// again, and the discards that follow keep or give back the space.
func TestPassDiscardReopen(t *testing.T) {
	needQemu(t)
	fdtest.Check(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "t.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", img, "8M")
	qemuIO(t, img, "write -P 1 0 4M")
	g := fixture(t)
	opts := func(pass bool) block.Options {
		o := qcow2Options(img)
		o["read-only"], o["discard"], o["node-name"] = false, "unmap", "q"
		o["pass-discard-request"] = pass
		return o
	}
	n, err := g.Add(opts(true))
	if err != nil {
		t.Fatal(err)
	}
	be, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, pass := range []bool{false, true} {
		if err := g.Reopen([]block.Options{opts(pass)}); err != nil {
			t.Fatal(err)
		}
		before := fileBlocks(t, img)
		if err := n.Discard(int64(i)<<21, 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := n.Flush(); err != nil { // the references drop at write-back
			t.Fatal(err)
		}
		if after := fileBlocks(t, img); (after <= before-(1<<20)) != pass {
			t.Errorf("pass-discard-request=%v: %d bytes allocated, %d before", pass, after, before)
		}
	}
	g.Detach(be)
	if err := g.Delete(n.Name()); err != nil {
		t.Fatal(err)
	}
	checkClean(t, dir, img)
}
