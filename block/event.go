package block

// EventSink is a driver that wants to hear of a format's metadata and IO
// steps below it: QEMU's BLKDBG_EVENT points, named as blkdebug names
// them ("l2_update", "flush_to_disk"). blkdebug is the one sink; a format
// calls Event on its file child at each point, which costs a lookup down
// the file chain when no sink is there.
type EventSink interface {
	Event(name string)
}

// Event tells the first EventSink at or below n, following each node's
// primary child ("file", or blkdebug's "image") as QEMU's
// bdrv_debug_event does, that the format above reached event name.
func (n *Node) Event(name string) {
	for n != nil {
		n.mu.RLock()
		sink, ok := n.img.(EventSink)
		next := n.primaryChild()
		n.mu.RUnlock()
		if ok {
			sink.Event(name)
			return
		}
		n = next
	}
}

// primaryChild is the child a node's data lives in, which its writers
// write through: "file", or a filter's "image" (QEMU's bdrv_primary_bs).
func (n *Node) primaryChild() *Node {
	if f := n.children["file"]; f != nil {
		return f
	}
	return n.children["image"]
}
