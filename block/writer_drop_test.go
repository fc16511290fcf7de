package block_test

import (
	"os"
	"testing"

	"minivmm/block"
)

// writeBackImage holds its writes in memory and puts them on its file
// child when it loses its last writer (or, if still held, at Close).
type writeBackImage struct {
	file    *block.Node
	pending map[int64][]byte
	dropErr error
}

func (w *writeBackImage) ReadAt(p []byte, off int64) (int, error) { return w.file.ReadAt(p, off) }
func (w *writeBackImage) WriteAt(p []byte, off int64) (int, error) {
	w.pending[off] = append([]byte(nil), p...)
	return len(p), nil
}
func (w *writeBackImage) Flush() error           { return nil }
func (w *writeBackImage) Length() (int64, error) { return w.file.Length(), nil }
func (w *writeBackImage) Close() error           { return w.DropWriter() }

func (w *writeBackImage) DropWriter() error {
	for off, p := range w.pending {
		if _, err := w.file.WriteAt(p, off); err != nil {
			w.dropErr = err
			return err
		}
		delete(w.pending, off)
	}
	return nil
}

var lastWriteBack *writeBackImage

func init() {
	block.Register(&block.Driver{
		Name:   "writeback-test",
		Format: true,
		Open: func(o *block.OpenContext) (block.Image, error) {
			lastWriteBack = &writeBackImage{file: o.Child("file"), pending: map[int64][]byte{}}
			return lastWriteBack, nil
		},
	})
}

// TestDropWriterBeforeChildLosesWrite: a driver holding writes in memory
// writes them back when its last writer detaches, while its file child
// still lets it (also when the child goes back to read-only).
func TestDropWriterBeforeChildLosesWrite(t *testing.T) {
	for _, autoRO := range []bool{false, true} {
		g, _ := fixture(t)
		path := image(t, 4096)
		n, err := g.Add(opts(t, `{"driver":"writeback-test","file":{"driver":"file","filename":%q,"auto-read-only":%v}}`, path, autoRO))
		if err != nil {
			t.Fatal(err)
		}
		w := lastWriteBack
		b, err := g.Attach("", n, block.Perm{Write: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.WriteAt([]byte("later"), 512); err != nil {
			t.Fatal(err)
		}
		g.Detach(b)
		if w.dropErr != nil || len(w.pending) != 0 {
			t.Fatalf("auto-read-only %v: write-back when the last writer left: %v", autoRO, w.dropErr)
		}
		if data, _ := os.ReadFile(path); string(data[512:517]) != "later" {
			t.Fatalf("auto-read-only %v: the held write did not reach the file", autoRO)
		}
	}
}
