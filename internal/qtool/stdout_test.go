package qtool

import (
	"bytes"
	"os"
	"testing"

	"minivmm/internal/fdtest"
)

// Stdout holds output until Flush on a pipe (block buffering), as stdio
// does for qemu-img, so that stderr written meanwhile comes first.
func TestStdoutBuffersOnPipe(t *testing.T) {
	fdtest.Check(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := NewStdout(w)
	if s.lineMode {
		t.Fatal("a pipe is not a terminal")
	}
	s.Write([]byte("Warning: Image size mismatch!\n"))
	w.Write([]byte("error\n")) // stderr on the same pipe
	s.Flush()
	w.Close()
	var got bytes.Buffer
	got.ReadFrom(r)
	if want := "error\nWarning: Image size mismatch!\n"; got.String() != want {
		t.Errorf("got %q, want %q", got.String(), want)
	}
}
