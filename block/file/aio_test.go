package file_test

import (
	"os"
	"path/filepath"
	"testing"

	"minivmm/block"
	_ "minivmm/block/file"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// TestAIOOption: threads, io_uring and native (with cache.direct=on)
// open; native without cache.direct and unknown modes are refused with
// what Debian's QEMU 7.2 answers blockdev-add.
func TestAIOOption(t *testing.T) {
	fdtest.Check(t)
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		aio    string
		direct bool
		want   string
	}{
		{"threads", false, ""},
		{"native", false, "aio=native was specified, but it requires cache.direct=on, which was not specified."},
		{"native", true, ""},
		{"io_uring", false, ""},
		{"io_uring", true, ""},
		{"bogus", false, "Parameter 'aio' does not accept value 'bogus'"},
	} {
		reg := qemuopen.New(qemuopen.Config{})
		g := block.NewGraph(reg)
		_, err := g.Add(block.Options{"driver": "file", "filename": p, "aio": tc.aio, "cache": block.Options{"direct": tc.direct}})
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("aio=%s direct=%v: %q, want %q", tc.aio, tc.direct, got, tc.want)
		}
		g.Close()
		reg.CloseAll()
	}
}
