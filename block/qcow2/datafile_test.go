package qcow2

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"minivmm/block"
)

// dfImage makes an image with a data file with qemu-img in a temporary
// directory.
func dfImage(t *testing.T, opts string) (img, data string) {
	t.Helper()
	needQemu(t)
	dir := t.TempDir()
	img, data = filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "a.data")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+data+opts, img, "1M")
	return img, data
}

// TestDataFileOpen: the data file the header names, or the data-file
// option's node (by reference or inline), is the data-file child; the
// open's refusals are QEMU's.
func TestDataFileOpen(t *testing.T) {
	img, data := dfImage(t, "")
	qemuIO(t, img, "write -P 0x5c 0 64k")
	plainImg := filepath.Join(t.TempDir(), "plain.qcow2")
	run(t, filepath.Dir(plainImg), "qemu-img", "create", "-q", "-f", "qcow2", plainImg, "1M")
	for _, tc := range []struct {
		name   string
		pre    block.Options // a node added first, named "d"
		img    string
		extra  block.Options
		err    string
		wantDF string // the data-file child's filename
	}{
		{name: "from header", img: img, wantDF: data},
		{name: "inline", img: img, extra: block.Options{"data-file": block.Options{"driver": "file", "filename": data}}, wantDF: data},
		{name: "reference", img: img, pre: block.Options{"driver": "file", "node-name": "d", "filename": data},
			extra: block.Options{"data-file": "d"}, wantDF: data},
		{name: "missing", img: img, extra: block.Options{"data-file": block.Options{"driver": "file", "filename": data + ".gone"}},
			err: "Could not open '" + data + ".gone': No such file or directory"},
		{name: "no data file", img: plainImg, extra: block.Options{"data-file": block.Options{"driver": "file", "filename": data}},
			err: "'data-file' can only be set for images with an external data file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := fixture(t)
			if tc.pre != nil {
				if _, err := g.Add(tc.pre); err != nil {
					t.Fatal(err)
				}
			}
			n, err := openQcow2(g, tc.img, tc.extra)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v; want %q", err, tc.err)
				}
				if tc.pre == nil && len(g.Nodes()) != 0 {
					t.Errorf("a failed open left nodes: %d", len(g.Nodes()))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if df := n.Child("data-file"); df == nil || df.Filename() != tc.wantDF {
				t.Fatalf("data-file child %v", df)
			}
			if got := readAll(t, n)[:64<<10]; !bytes.Equal(got, bytes.Repeat([]byte{0x5c}, 64<<10)) {
				t.Error("cluster 0 does not read what qemu-io wrote")
			}
		})
	}
}

// TestDataFileReopen: a read-only node becomes writable through a
// reopen with its data file kept, writes land in the data file, and the
// data file cannot be swapped (QEMU's "Cannot change the option").
func TestDataFileReopen(t *testing.T) {
	img, data := dfImage(t, ",data_file_raw=on")
	g := fixture(t)
	o := qcow2Options(img)
	o["node-name"], o["read-only"] = "q", true
	n, err := g.Add(o)
	if err != nil {
		t.Fatal(err)
	}
	rw := qcow2Options(img)
	rw["node-name"], rw["read-only"] = "q", false
	if err := g.Reopen([]block.Options{rw}); err != nil {
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte{0x6d}, 8192)
	if _, err := n.WriteAt(p, 4096); err != nil {
		t.Fatal(err)
	}
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	g.Detach(b)
	// The raw data file is the disk.
	raw, err := g.Add(block.Options{"driver": "raw", "read-only": true, "file": block.Options{"driver": "file", "filename": data}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, raw), readAll(t, n)) {
		t.Error("the raw data file differs from the image")
	}
	if _, err := g.Add(block.Options{"driver": "file", "node-name": "other", "filename": data, "read-only": true}); err != nil {
		t.Fatal(err)
	}
	swap := qcow2Options(img)
	swap["node-name"], swap["read-only"], swap["data-file"] = "q", true, "other"
	if err := g.Reopen([]block.Options{swap}); err == nil || !strings.Contains(err.Error(), "Cannot change the option 'data-file'") {
		t.Errorf("swapping the data file: %v", err)
	}
	qemuIOCheck(t, img)
}

// qemuIOCheck runs qemu-img check on img: no corruption, no leak.
func qemuIOCheck(t *testing.T, img string) {
	t.Helper()
	run(t, filepath.Dir(img), "qemu-img", "check", img)
}
