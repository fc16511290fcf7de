package linuxguest

import (
	"fmt"
	"io"
)

// cpioEntry is one file of an initramfs in the kernel's "newc" format
// (Documentation/driver-api/early-userspace/buffer-format.rst).
type cpioEntry struct {
	name  string
	mode  uint32 // type bits and permissions, as in stat(2)
	data  []byte // contents; a symlink's target
	major uint32 // rdev, for device nodes
	minor uint32
}

const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeChar    = 0o020000
)

// writeCpio writes entries and the trailer. Written in Go rather than by a
// cpio tool so that the image can hold device nodes (/dev/console, which
// the kernel opens before it runs /init) without root on the host.
func writeCpio(w io.Writer, entries []cpioEntry) error {
	var off int64
	put := func(b []byte) error {
		n, err := w.Write(b)
		off += int64(n)
		return err
	}
	pad := func() error {
		if r := off % 4; r != 0 {
			return put(make([]byte, 4-r))
		}
		return nil
	}
	for i, e := range append(entries, cpioEntry{name: "TRAILER!!!"}) {
		nlink := 1
		if e.mode&0o170000 == modeDir {
			nlink = 2
		}
		hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			i+1, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.major, e.minor, len(e.name)+1, 0)
		if err := put([]byte(hdr)); err != nil {
			return err
		}
		if err := put(append([]byte(e.name), 0)); err != nil {
			return err
		}
		if err := pad(); err != nil {
			return err
		}
		if err := put(e.data); err != nil {
			return err
		}
		if err := pad(); err != nil {
			return err
		}
	}
	return nil
}
