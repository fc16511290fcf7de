package block_test

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
)

// TestCopyRangeToRequest: Node.CopyRangeTo is a write request: refused
// without a writer and out of bounds (the copy never called), raw passes
// its window's offset to the file, the bytes read back, and a flush after
// a request reaches the driver (it counts as a completed write).
func TestCopyRangeToRequest(t *testing.T) {
	g, _ := fixture(t)
	drv, flushes := registerProbe(t, nil)
	path := image(t, 64<<10)
	n, err := g.Add(opts(t, `{"driver":"raw","offset":4096,"file":{"driver":"file","filename":%q}}`, path))
	if err != nil {
		t.Fatal(err)
	}
	called := 0
	put := func(data []byte) block.HostCopyFunc {
		return func(fd int, off, pos, l int64) error {
			called++
			_, err := unix.Pwrite(fd, data[pos:pos+l], off)
			return err
		}
	}
	data := bytes.Repeat([]byte{0x5a}, 1000)
	if err := n.CopyRangeTo(100, 1000, put(data)); !errors.Is(err, unix.EPERM) || called != 0 {
		t.Fatalf("without a writer: %v, %d calls", err, called)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Detach(b)
	if err := n.CopyRangeTo(n.Length()-10, 1000, put(data)); !errors.Is(err, unix.EIO) || called != 0 {
		t.Fatalf("past the end: %v, %d calls", err, called)
	}
	if err := n.CopyRangeTo(100, 1000, put(data)); err != nil || called != 1 {
		t.Fatalf("copy: %v, %d calls", err, called)
	}
	got := make([]byte, 1000)
	if _, err := n.Child("file").ReadAt(got, 4096+100); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the file does not hold the copy at the window's offset: %v", err)
	}

	// A format without CopyRangeTo: not supported; the request counts as
	// a write (as a failed write does): the next flush reaches the driver.
	p, err := g.Add(opts(t, `{"driver":%q,"file":{"driver":"file","filename":%q}}`, drv, image(t, 4096)))
	if err != nil {
		t.Fatal(err)
	}
	pb, err := g.Attach("", p, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Detach(pb)
	if err := p.CopyRangeTo(0, 10, put(data)); !errors.Is(err, block.ErrNotSupported) {
		t.Fatalf("a driver without CopyRangeTo: %v", err)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	before := flushes.Load()
	if err := p.CopyRangeTo(0, 10, put(data)); !errors.Is(err, block.ErrNotSupported) {
		t.Fatal(err)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if flushes.Load() != before+1 {
		t.Errorf("the flush after a copy request did not reach the driver")
	}
}
