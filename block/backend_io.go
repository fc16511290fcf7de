package block

// A backend's requests follow its node through a snapshot's switch. Each
// holds the backend's io lock, shared, from picking the node to the end
// of the request; the switch takes it exclusively, so it waits for the
// requests in flight on the old top and holds back new ones until the
// overlay is in place (QEMU's BlockBackend queues its requests during a
// drain and sends them to its root as it is when the drain ends). No
// request can pick the old top, wait out the drain, and then write the
// image that has just become a backing file.

// ReadAt reads from the node the backend uses.
func (b *Backend) ReadAt(p []byte, off int64) (int, error) {
	b.io.RLock()
	defer b.io.RUnlock()
	return b.node.Load().ReadAt(p, off)
}

// WriteAt writes through the node the backend uses.
func (b *Backend) WriteAt(p []byte, off int64) (int, error) {
	b.io.RLock()
	defer b.io.RUnlock()
	return b.node.Load().WriteAt(p, off)
}

// Flush flushes the node the backend uses.
func (b *Backend) Flush() error {
	b.io.RLock()
	defer b.io.RUnlock()
	return b.node.Load().Flush()
}
