package block

// A backend's IO follows its node through a snapshot's switch. A request
// picks the node, then enters its gate; one that picked the old top just
// before the switch enters after it, and is refused there (the old top
// has lost the backend's write permission, or is closed) before anything
// reaches the image. Such a request is sent again to the node the
// backend uses now, as QEMU's BlockBackend queues requests during a drain
// and sends them to its root as it is when the drain ends.

// ReadAt reads from the node the backend uses.
func (b *Backend) ReadAt(p []byte, off int64) (int, error) {
	for {
		n := b.node.Load()
		c, err := n.ReadAt(p, off)
		if err == nil || b.node.Load() == n {
			return c, err
		}
	}
}

// WriteAt writes through the node the backend uses.
func (b *Backend) WriteAt(p []byte, off int64) (int, error) {
	for {
		n := b.node.Load()
		c, err := n.WriteAt(p, off)
		if err == nil || b.node.Load() == n {
			return c, err
		}
	}
}

// Flush flushes the node the backend uses.
func (b *Backend) Flush() error {
	for {
		n := b.node.Load()
		err := n.Flush()
		if err == nil || b.node.Load() == n {
			return err
		}
	}
}
