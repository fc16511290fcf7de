package qcow2

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block"
)

// TestBackingNotAFile: a FIFO (no writer: opening it for reading would
// block forever, in QEMU too) or a directory as the backing file is
// refused at once, with the file driver's message.
func TestBackingNotAFile(t *testing.T) {
	needQemu(t)
	for _, kind := range []string{"fifo", "directory"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			base := filepath.Join(dir, "base")
			var err error
			if kind == "fifo" {
				err = unix.Mkfifo(base, 0o600)
			} else {
				err = unix.Mkdir(base, 0o700)
			}
			if err != nil {
				t.Fatal(err)
			}
			img := filepath.Join(dir, "top.qcow2")
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "base", "-F", "raw", img, "1M")
			g := fixture(t)
			done := make(chan error, 1)
			go func() {
				_, err := g.Add(block.Options{"driver": "qcow2", "file": block.Options{"driver": "file", "filename": img}})
				done <- err
			}()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				// Unblock the open (a writer appears), so that the test ends.
				if fd, err := unix.Open(base, unix.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
					defer unix.Close(fd)
				}
				<-done
				t.Fatal("opening an image whose backing file is a FIFO blocked")
			}
			want := "'file' driver requires '" + base + "' to be a regular file"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("open: %v; want %q", err, want)
			}
		})
	}
}
