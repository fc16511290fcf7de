package qtool

import (
	"bufio"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Stdout buffers standard output as the C library does for QEMU's tools:
// by line on a terminal, in blocks of the file's preferred size otherwise.
// With both streams on one pipe (2>&1), stderr's messages then come out
// where qemu-img's do: before the stdout lines still in the buffer.
type Stdout struct {
	mu       sync.Mutex
	w        *bufio.Writer
	lineMode bool
}

// NewStdout wraps w; an *os.File decides the buffering, anything else is
// block-buffered.
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

func (s *Stdout) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.w.Write(p)
	if s.lineMode && err == nil {
		for _, c := range p {
			if c == '\n' {
				err = s.w.Flush()
				break
			}
		}
	}
	return n, err
}

// Flush is fflush(stdout).
func (s *Stdout) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Flush()
}
