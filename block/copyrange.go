package block

// Copy offloading into a node and preallocation: requests that
// hand a range of the node's host file to the caller (QEMU's
// bdrv_co_copy_range_to, where the format driver allocates and the file
// driver copies) or that allocate without writing data. Both are write
// requests of the node: permission, drain, serialisation, the dirty
// bitmaps and the flush generation see them as they see writes.

// HostCopyFunc fills length bytes of a host file in the kernel
// (copy_file_range(2)): the bytes at pos in the request go to fd at off.
// It writes them all, or fails.
type HostCopyFunc func(fd int, off, pos, length int64) error

// RangeCopyTarget is a driver whose range [off, off+length) can be filled
// in place by copy (a format driver allocating where the bytes go, the
// file driver giving its descriptor). A driver that cannot at this range
// returns ErrNotSupported before copy is called.
type RangeCopyTarget interface {
	CopyRangeTo(off, length int64, copy HostCopyFunc) error
}

// Prealloc is how a range is preallocated (QEMU's PreallocMode, less off).
type Prealloc uint8

const (
	PreallocMetadata Prealloc = iota // allocated, nothing written
	PreallocFalloc                   // allocated, host space reserved too
	PreallocFull                     // allocated, host space written (zeroes)
)

// Preallocator is a driver that can allocate a range without writing
// guest data (qcow2's preallocation modes): the range reads the same
// afterwards.
type Preallocator interface {
	Preallocate(off, length int64, mode Prealloc) error
}

// CopyRangeTo fills [off, off+length) of the node with copy, in the
// node's host file, as a write of that range. ErrNotSupported (wrapped)
// means the node cannot take such a copy there; the caller then writes
// the bytes itself.
func (n *Node) CopyRangeTo(off, length int64, copy HostCopyFunc) error {
	if err := n.checkWrite("copy-range", off, length); err != nil {
		return err
	}
	defer n.serial.writeBegin(off, length)()
	if err := n.gate.enter(); err != nil {
		return n.fail("copy-range", off, length, err)
	}
	defer n.gate.leave()
	defer n.writeDone()
	defer n.markDirty(off, length)
	n.mu.RLock()
	defer n.mu.RUnlock()
	t, ok := n.img.(RangeCopyTarget)
	if !ok {
		return n.fail("copy-range", off, length, ErrNotSupported)
	}
	if err := t.CopyRangeTo(off, length, copy); err != nil {
		return n.fail("copy-range", off, length, err)
	}
	return nil
}

// Preallocate allocates [off, off+length) without writing guest data
// where the driver can (ErrNotSupported where it cannot); what the range
// reads does not change.
func (n *Node) Preallocate(off, length int64, mode Prealloc) error {
	if err := n.checkWrite("allocate", off, length); err != nil {
		return err
	}
	defer n.serial.writeBegin(off, length)()
	if err := n.gate.enter(); err != nil {
		return n.fail("allocate", off, length, err)
	}
	defer n.gate.leave()
	defer n.writeDone()
	n.mu.RLock()
	defer n.mu.RUnlock()
	a, ok := n.img.(Preallocator)
	if !ok {
		return n.fail("allocate", off, length, ErrNotSupported)
	}
	if err := a.Preallocate(off, length, mode); err != nil {
		return n.fail("allocate", off, length, err)
	}
	return nil
}
