package block

import "errors"

// Fast zeroing: QEMU's write-zeroes with BDRV_REQ_NO_FALLBACK, which an
// NBD client asks for with NBD_CMD_FLAG_FAST_ZERO (qemu-img convert and
// nbdcopy pre-zero a target that way, and write data instead when the
// answer is ENOTSUP). Kept apart from WriteZeroes, whose fallback writes
// a buffer of zeroes: a request that must not fall back never reaches
// that code.

// FastZeroer is a driver that can zero a range without writing its
// data: by metadata (qcow2's zero flag), by the host (fallocate), or by
// passing the request to a child that can. WriteZeroesFast zeroes the
// whole range so, or returns ErrNotSupported having changed nothing;
// it never writes zeroes as data.
type FastZeroer interface {
	WriteZeroesFast(off, n int64, unmap bool) error
}

// WriteZeroesFast is WriteZeroes without the fallback: the range is
// zeroed only where the driver chain can do so without writing data
// (QEMU's BDRV_REQ_NO_FALLBACK), else the error wraps ErrNotSupported
// and the node is as it was.
func (n *Node) WriteZeroesFast(off, length int64, unmap bool) error {
	if err := n.checkWrite("write-zeroes", off, length); err != nil {
		return err
	}
	defer n.serial.writeBegin(off, length)()
	if err := n.gate.enter(); err != nil {
		return n.fail("write-zeroes", off, length, err)
	}
	defer n.gate.leave()
	defer n.writeDone()
	n.mu.RLock()
	err := ErrNotSupported
	if fz, ok := n.img.(FastZeroer); ok {
		err = fz.WriteZeroesFast(off, length, unmap && n.state.discard == "unmap")
	}
	n.mu.RUnlock()
	if !errors.Is(err, ErrNotSupported) {
		// Failed or not, the range may have changed.
		n.markDirty(off, length)
	}
	if err != nil {
		return n.fail("write-zeroes", off, length, err)
	}
	return nil
}

// WriteZeroesFast zeroes a range of the node the backend uses, without
// writing data (Node.WriteZeroesFast).
func (b *Backend) WriteZeroesFast(off, length int64, unmap bool) error {
	b.io.RLock()
	defer b.io.RUnlock()
	return b.node.Load().WriteZeroesFast(off, length, unmap)
}
