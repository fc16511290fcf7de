package raw_test

import (
	"os"
	"path/filepath"
	"testing"

	"minivmm/block"
	_ "minivmm/block/file"
	_ "minivmm/block/raw"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// TestTruncate: a raw node resizes its file (offset kept), unless its
// size was given as an option, as QEMU's raw_co_truncate.
func TestTruncate(t *testing.T) {
	fdtest.Check(t)
	for _, tc := range []struct {
		name           string
		opts           block.Options
		size, wantFile int64
		fail           bool
	}{
		{name: "grow", opts: block.Options{}, size: 2 << 20, wantFile: 2 << 20},
		{name: "shrink", opts: block.Options{}, size: 4096, wantFile: 4096},
		{name: "offset", opts: block.Options{"offset": 512}, size: 8192, wantFile: 8192 + 512},
		{name: "fixed size", opts: block.Options{"size": 4096}, size: 8192, wantFile: 1 << 20, fail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.raw")
			if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			reg := qemuopen.New(qemuopen.Config{})
			defer reg.CloseAll()
			g := block.NewGraph(reg)
			defer g.Close()
			opts := block.Options{"driver": "raw", "node-name": "r", "file": block.Options{"driver": "file", "filename": path}}
			for k, v := range tc.opts {
				opts[k] = v
			}
			n, err := g.Add(opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := g.Attach("", n, block.Perm{Write: true}); err != nil {
				t.Fatal(err)
			}
			err = n.Truncate(tc.size)
			if (err != nil) != tc.fail {
				t.Fatalf("Truncate(%d): %v, want failure %v", tc.size, err, tc.fail)
			}
			if !tc.fail && n.Length() != tc.size {
				t.Errorf("length %d after Truncate(%d)", n.Length(), tc.size)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Size() != tc.wantFile {
				t.Errorf("file size %d, want %d", st.Size(), tc.wantFile)
			}
		})
	}
}
