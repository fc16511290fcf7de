package block

// CompressedWriter is a format that stores whole clusters compressed
// (qcow2): QEMU's BDRV_REQ_WRITE_COMPRESSED, which the compress filter
// sets on every write it passes down.
type CompressedWriter interface {
	// WriteCompressed writes p, exactly one cluster, at the cluster-
	// aligned offset off, compressed.
	WriteCompressed(p []byte, off int64) error
	ClusterSize() int64
}

// WriteCompressed writes p, one whole cluster at a cluster-aligned off,
// compressed, through the node's driver, counted as any write is (the
// gate, the flush generation, dirty bitmaps). A driver that cannot
// compress refuses it with ErrNotSupported.
func (n *Node) WriteCompressed(p []byte, off int64) error {
	length := int64(len(p))
	if err := n.checkWrite("write", off, length); err != nil {
		return err
	}
	defer n.serial.writeBegin(off, length)()
	if err := n.gate.enter(); err != nil {
		return n.fail("write", off, length, err)
	}
	defer n.gate.leave()
	defer n.writeDone()
	n.mu.RLock()
	cw, ok := n.img.(CompressedWriter)
	if !ok {
		n.mu.RUnlock()
		return n.fail("write", off, length, ErrNotSupported)
	}
	err := cw.WriteCompressed(p, off)
	n.mu.RUnlock()
	n.markDirty(off, length) // failed or not, the cluster may have changed
	if err != nil {
		return n.fail("write", off, length, err)
	}
	return nil
}

// ClusterSize is the cluster size of a node whose driver stores
// compressed clusters, or 0.
func (n *Node) ClusterSize() int64 {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if cw, ok := n.img.(CompressedWriter); ok {
		return cw.ClusterSize()
	}
	return 0
}
