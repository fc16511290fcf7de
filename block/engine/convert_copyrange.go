package engine

import (
	"errors"

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

// offloadData copies the data extent at off in the kernel where both
// ends sit in host files, and through the block layer (buf) elsewhere,
// or everywhere once the kernel refuses.
func (c *converter) offloadData(off, n int64, buf []byte) error {
	for n > 0 {
		i := c.src.part(off)
		node, poff := c.src.parts[i], off-c.src.starts[i]
		run := min(n, c.src.starts[i+1]-off)
		if !c.noOffload.Load() {
			sfd, soff, sl, sok := hostRange(node, poff, run)
			if sok && (c.dst.Driver() == "raw" || c.dst.Driver() == "file") {
				// Only into raw files: a qcow2 target's clusters may be
				// shared with snapshots, or not allocated yet.
				dfd, doff, dl, dok := hostRange(c.dst, off, sl)
				if dok {
					done, err := c.copyRange(sfd, soff, dfd, doff, dl)
					if err != nil {
						return err
					}
					off, n = off+done, n-done
					if done > 0 {
						continue
					}
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

// copyRange copies up to n bytes in the kernel; 0 bytes copied (and no
// error) means the kernel refused and the caller copies them itself.
func (c *converter) copyRange(sfd int, soff int64, dfd int, doff, n int64) (int64, error) {
	var done int64
	for done < n {
		k, err := c.o.CopyRange(sfd, soff+done, dfd, doff+done, int(min(n-done, convertChunk)))
		if err != nil && copyRangeRefused(err) {
			c.noOffload.Store(true)
			return done, nil
		}
		if err != nil {
			return done, err
		}
		if k <= 0 {
			return done, nil
		}
		done += int64(k)
	}
	return done, nil
}
