package block_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
)

// failingWriteBack is a format whose write-back, when its last writer
// leaves and at close, fails.
type failingWriteBack struct{ file *block.Node }

func (f *failingWriteBack) ReadAt(p []byte, off int64) (int, error)  { return f.file.ReadAt(p, off) }
func (f *failingWriteBack) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }
func (f *failingWriteBack) Flush() error                             { return nil }
func (f *failingWriteBack) Length() (int64, error)                   { return f.file.Length(), nil }
func (f *failingWriteBack) Close() error                             { return unix.EIO }
func (f *failingWriteBack) DropWriter() error                        { return unix.ENOSPC }

func init() {
	block.Register(&block.Driver{
		Name: "failing-writeback-test", Format: true,
		Open: func(o *block.OpenContext) (block.Image, error) { return &failingWriteBack{file: o.Child("file")}, nil },
	})
}

// TestCloseErrorsReachTheCaller: a failed write-back when the last
// writer detaches is Detach's error, and one at close is Close's, each
// naming the node (the tools turn them into a failed exit status). Each
// failure is told once: closing a node whose last writer's write-back
// failed tries again without write permission, which is no news.
func TestCloseErrorsReachTheCaller(t *testing.T) {
	g, _ := fixture(t)
	n, err := g.Add(opts(t, `{"driver":"failing-writeback-test","node-name":"wb","file":{"driver":"file","filename":%q}}`, image(t, 4096)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Add(opts(t, `{"driver":"failing-writeback-test","node-name":"closed","file":{"driver":"file","filename":%q}}`, image(t, 4096))); err != nil {
		t.Fatal(err)
	}
	var reported []block.WriteBackError
	g.OnWriteBackError(func(e block.WriteBackError) { reported = append(reported, e) })
	b, err := g.Attach("drive0", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	var be *block.Error
	if err := g.Detach(b); !errors.Is(err, unix.ENOSPC) || !errors.As(err, &be) || be.Node != "wb" {
		t.Errorf("Detach: %v", err)
	}
	if err := g.Close(); !errors.Is(err, unix.EIO) || !errors.As(err, &be) || be.Node != "closed" || strings.Contains(err.Error(), "'wb'") {
		t.Errorf("Close: %v", err)
	}
	want := []block.WriteBackError{{Device: "drive0", Node: "wb", Err: unix.ENOSPC}, {Node: "closed", Err: unix.EIO}}
	if !reflect.DeepEqual(reported, want) {
		t.Errorf("reported %v, want %v", reported, want)
	}
}
