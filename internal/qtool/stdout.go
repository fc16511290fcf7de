package qtool

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Stdout buffers standard output as the C library does for QEMU's
// tools: by line on a terminal, in blocks of the file's st_blksize
// otherwise. With both streams on one pipe (a script's 2>&1), error
// messages, which go out at once on stderr, then come before the output
// printed ahead of them, where qemu-img's and qemu-io's do.
type Stdout struct {
	mu       sync.Mutex // asynchronous requests print as they complete
	w        *bufio.Writer
	lineMode bool
}

// NewStdout buffers w as the C library would buffer it.
func NewStdout(w io.Writer) *Stdout {
	size := 4096
	lineMode := false
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		lineMode = err == nil
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err == nil && st.Blksize > 0 {
			size = int(st.Blksize)
		}
	}
	return &Stdout{w: bufio.NewWriterSize(w, size), lineMode: lineMode}
}

// Write buffers p (flushing at a newline on a terminal).
func (s *Stdout) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.w.Write(p)
	if s.lineMode && bytes.IndexByte(p, '\n') >= 0 {
		s.w.Flush()
	}
	return n, err
}

// Flush writes out what is buffered (fflush(stdout)).
func (s *Stdout) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w.Flush()
}
