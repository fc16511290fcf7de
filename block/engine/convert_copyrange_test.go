package engine

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/internal/fdtest"
)

// TestConvertCopyRange: with CopyRange, the data the top image holds in
// its own clusters goes through copy_file_range (counted by the hook),
// the backing file's through reads and writes; a kernel refusal falls
// back for good, another error fails the copy.
func TestConvertCopyRange(t *testing.T) {
	fdtest.Check(t)
	for _, tc := range []struct {
		name      string
		fail      error // what the hook returns instead of copying
		wantBytes int64 // offloaded
		wantCalls int64 // at most
		wantErr   bool
	}{
		{name: "offloaded", wantBytes: 2 * mib, wantCalls: 64},
		{name: "EXDEV", fail: unix.EXDEV, wantCalls: 1},
		{name: "ENOSYS", fail: unix.ENOSYS, wantCalls: 1},
		{name: "EIO", fail: unix.EIO, wantCalls: 4, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, top, _, _ := chain(t)
			want := read(t, top, 0, 8*mib)
			path := filepath.Join(t.TempDir(), "out.raw")
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, 8*mib); err != nil {
				t.Fatal(err)
			}
			dst, err := g.Add(block.Options{"driver": "raw", "file": block.Options{"driver": "file", "filename": path}})
			if err != nil {
				t.Fatal(err)
			}
			w, err := g.Attach("", dst, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Detach(w)
			var calls, copied atomic.Int64
			hook := func(sfd int, soff int64, dfd int, doff int64, n int) (int, error) {
				calls.Add(1)
				if tc.fail != nil {
					return 0, tc.fail
				}
				k, err := CopyFileRange(sfd, soff, dfd, doff, n)
				copied.Add(int64(k))
				return k, err
			}
			err = Convert(context.Background(), []*block.Node{top}, dst, ConvertOptions{
				Workers: 4, InOrder: true, TargetZero: true, BackingLen: -1, CopyRange: hook,
			})
			if tc.wantErr {
				if !errors.Is(err, tc.fail) {
					t.Fatalf("error %v, want %v", err, tc.fail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(read(t, dst, 0, 8*mib), want) {
				t.Error("the copy differs")
			}
			if copied.Load() != tc.wantBytes || calls.Load() == 0 || calls.Load() > tc.wantCalls {
				t.Errorf("%d bytes offloaded in %d calls; want %d in 1..%d", copied.Load(), calls.Load(), tc.wantBytes, tc.wantCalls)
			}
		})
	}
}
