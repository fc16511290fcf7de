package engine

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"minivmm/block"
)

// CopyRangeFunc copies n bytes from srcFd at srcOff to dstFd at dstOff in
// the kernel (copy_file_range(2)), returning how many it copied.
type CopyRangeFunc func(srcFd int, srcOff int64, dstFd int, dstOff int64, n int) (int, error)

// CopyFileRange is CopyRangeFunc done by copy_file_range(2).
func CopyFileRange(srcFd int, srcOff int64, dstFd int, dstOff int64, n int) (int, error) {
	return unix.CopyFileRange(srcFd, &srcOff, dstFd, &dstOff, n, 0)
}

// hostFder is a protocol node's image (the file driver) that gives its
// descriptor.
type hostFder interface{ HostFd() int }

// hostRange is where the n bytes at off of node live in a host file: its
// descriptor, the offset there and how many bytes (at most n) are laid
// out linearly from it. ok is false where the bytes do not sit in a host
// file as they read (zeroes, a backing file's, compressed, an external
// data file's).
func hostRange(node *block.Node, off, n int64) (fd int, hostOff, l int64, ok bool) {
	if f, isFile := node.Image().(hostFder); isFile {
		return f.HostFd(), off, n, true
	}
	if node.Child("data-file") != nil {
		return 0, 0, 0, false
	}
	file := node.Child("file")
	if file == nil {
		return 0, 0, 0, false
	}
	f, isFile := file.Image().(hostFder)
	if !isFile {
		return 0, 0, 0, false
	}
	st, l, err := node.BlockStatus(off, n)
	if err != nil || l <= 0 || st.Offset < 0 || st.Depth != 0 || !st.Allocated {
		return 0, 0, 0, false
	}
	if node.Driver() != "raw" && (!st.Data || st.Zero) {
		return 0, 0, 0, false
	}
	return f.HostFd(), st.Offset, l, true
}

// copyRangeRefused are the errors with which the kernel says it cannot
// copy between these two files, after which qemu-img (and minivmm) copy
// through reads and writes.
func copyRangeRefused(err error) bool {
	for _, e := range []error{unix.EXDEV, unix.EINVAL, unix.ENOSYS, unix.EOPNOTSUPP, unix.EBADF} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// offloadData copies the data extent at off in the kernel where the
// source's bytes sit in a host file and the destination takes a copy
// into its own (Node.CopyRangeTo: a raw file's bytes, a qcow2 image's
// clusters it owns or allocates for them), and through the block layer
// (buf) elsewhere, or everywhere once the kernel refuses.
func (c *converter) offloadData(off, n int64, buf []byte) error {
	for n > 0 {
		i := c.src.part(off)
		node, poff := c.src.parts[i], off-c.src.starts[i]
		run := min(n, c.src.starts[i+1]-off)
		if !c.noOffload.Load() {
			if sfd, soff, sl, ok := hostRange(node, poff, run); ok {
				err := c.dst.CopyRangeTo(off, sl, func(dfd int, doff, pos, l int64) error {
					return c.copyRange(sfd, soff+pos, dfd, doff, l)
				})
				switch {
				case err == nil:
					off, n = off+sl, n-sl
					continue
				case errors.Is(err, errCopyRefused):
					c.noOffload.Store(true)
				case errors.Is(err, block.ErrNotSupported):
					// Not into this range of dst (or not into dst at
					// all): read and written.
				default:
					return err
				}
			}
		}
		// Up to where the status changes, after which offloading may
		// be possible again.
		if _, l, err := node.BlockStatus(poff, run); err == nil && l > 0 {
			run = l
		}
		p := buf[:run]
		if err := c.src.readAt(p, off); err != nil {
			return fail(OpRead, off, err)
		}
		if _, err := c.dst.WriteAt(p, off); err != nil {
			return err
		}
		off, n = off+run, n-run
	}
	return nil
}

// errCopyRefused is the kernel refusing to copy between two files (or
// copying nothing): the range is then read and written, and so is all
// that follows.
var errCopyRefused = errors.New("copy_file_range refused")

// copyRange copies n bytes in the kernel, all of them or fails.
func (c *converter) copyRange(sfd int, soff int64, dfd int, doff, n int64) error {
	for done := int64(0); done < n; {
		k, err := c.o.CopyRange(sfd, soff+done, dfd, doff+done, int(min(n-done, convertChunk)))
		switch {
		case err != nil && copyRangeRefused(err):
			return fmt.Errorf("%w: %w", errCopyRefused, err)
		case err != nil:
			return err
		case k <= 0:
			return errCopyRefused
		}
		done += int64(k)
	}
	return nil
}
