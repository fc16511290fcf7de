package block

// The rest of a device's request types on a backend, following its node
// through a snapshot's switch as ReadAt and WriteAt do (backend_io.go).

// ReadV reads into bufs at off from the node the backend uses.
func (b *Backend) ReadV(bufs [][]byte, off int64) (int, error) {
	b.io.RLock()
	defer b.io.RUnlock()
	return b.node.Load().ReadV(bufs, off)
}

// WriteV writes bufs at off through the node the backend uses.
func (b *Backend) WriteV(bufs [][]byte, off int64, flags WriteFlags) (int, error) {
	b.io.RLock()
	defer b.io.RUnlock()
	return b.node.Load().WriteV(bufs, off, flags)
}

// Discard discards a range of the node the backend uses.
func (b *Backend) Discard(off, length int64) error {
	b.io.RLock()
	defer b.io.RUnlock()
	return b.node.Load().Discard(off, length)
}

// WriteZeroes zeroes a range of the node the backend uses.
func (b *Backend) WriteZeroes(off, length int64, unmap bool) error {
	b.io.RLock()
	defer b.io.RUnlock()
	return b.node.Load().WriteZeroes(off, length, unmap)
}

// Length is the size of the node the backend uses.
func (b *Backend) Length() int64 { return b.node.Load().Length() }
