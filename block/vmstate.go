package block

import "golang.org/x/sys/unix"

// VMStater is a format with a VM state area (qcow2's): bytes stored in
// the image beside the disk, which the guest never sees.
type VMStater interface {
	ReadVMState(p []byte, pos int64) (int, error)
	WriteVMState(p []byte, pos int64) (int, error)
}

// ReadVMState reads VM state at pos, as QEMU's bdrv_load_vmstate; a node
// whose image has no VM state area answers ENOTSUP. The request is
// admitted like any other (a drain or reopen waits for it).
func (n *Node) ReadVMState(p []byte, pos int64) (int, error) {
	if err := n.gate.enter(); err != nil {
		return 0, n.fail("vmstate-read", pos, int64(len(p)), err)
	}
	defer n.gate.leave()
	n.mu.RLock()
	defer n.mu.RUnlock()
	v, ok := n.img.(VMStater)
	if !ok {
		return 0, n.fail("vmstate-read", pos, int64(len(p)), unix.ENOTSUP)
	}
	c, err := v.ReadVMState(p, pos)
	if err != nil {
		return c, n.fail("vmstate-read", pos, int64(len(p)), err)
	}
	return c, nil
}

// WriteVMState writes VM state at pos, as QEMU's bdrv_save_vmstate. It
// counts as a write for Flush (the image has data and metadata to make
// durable), but marks no dirty bitmap: the guest's disk is unchanged.
func (n *Node) WriteVMState(p []byte, pos int64) (int, error) {
	length := int64(len(p))
	if n.writers.Load() == 0 {
		return 0, &Error{Node: n.name, Op: "vmstate-write", Off: pos, Len: length, Err: unix.EPERM}
	}
	if err := n.gate.enter(); err != nil {
		return 0, n.fail("vmstate-write", pos, length, err)
	}
	defer n.gate.leave()
	defer n.writeDone()
	n.mu.RLock()
	defer n.mu.RUnlock()
	v, ok := n.img.(VMStater)
	if !ok {
		return 0, n.fail("vmstate-write", pos, length, unix.ENOTSUP)
	}
	c, err := v.WriteVMState(p, pos)
	if err != nil {
		return c, n.fail("vmstate-write", pos, length, err)
	}
	return c, nil
}
