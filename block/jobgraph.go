package block

import "fmt"

// The graph changes block jobs make (commit, stream): a node going
// read-write for the job and back, and a backing link moved past the
// images a job has emptied into another. Both go through the one
// transactional reopen (reopenNodes), so the fds change as a
// blockdev-reopen would change them: /dev/fdset/N gives its O_RDWR fd
// for read-write, its O_RDONLY one back after.

// SetReadOnly reopens n read-only or read-write, with the children it
// created inline, keeping every other option (QEMU's
// bdrv_reopen_set_read_only). A node that already is as asked is left
// alone. On error nothing has changed.
func (g *Graph) SetReadOnly(n *Node, readOnly bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n.state.readOnly == readOnly {
		return nil
	}
	opts := inlineWithoutNames(n.own)
	opts["read-only"] = readOnly
	if _, given := opts["backing"]; !given {
		if b := n.children["backing"]; b != nil {
			opts["backing"] = b.name
		} else if headerBacking(n) != "" {
			opts["backing"] = nil
		}
	}
	items, err := g.reopenTree(n, opts, opts, "", "", false)
	if err != nil {
		return err
	}
	return g.reopenNodes(items)
}

// SetBackingChild makes backing (nil: none) n's backing child in the
// graph; the image's header is not touched. A backing file opened
// implicitly (from a header) that no node uses any more is closed, as
// after a blockdev-reopen.
func (g *Graph) SetBackingChild(n, backing *Node) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n.children["backing"] == backing {
		return nil
	}
	if backing != nil && backing.hasDescendant(n) {
		return fmt.Errorf("Making '%s' a backing child of '%s' would create a cycle", backing.name, n.name)
	}
	it := withoutChild(n, "backing")
	if backing != nil {
		it = withChild(n, "backing", backing)
	}
	return g.reopenNodes([]reopenItem{it})
}

// withoutChild is the reopen item that takes n's child key away.
func withoutChild(n *Node, key string) reopenItem {
	it := withChild(n, key, n)
	delete(it.children, key)
	it.opts[key], it.own[key] = nil, nil
	return it
}

// InUse says whether a backend (a device, or a job's hold) uses n.
func (n *Node) InUse() bool {
	n.g.mu.Lock()
	defer n.g.mu.Unlock()
	return len(n.users) > 0
}

// Parent is the node that uses n as its child key, if there is exactly
// one (a backing file's overlay).
func (n *Node) Parent(key string) (*Node, bool) {
	n.g.mu.Lock()
	defer n.g.mu.Unlock()
	var found *Node
	for p, k := range n.parents {
		if k == key {
			if found != nil {
				return nil, false
			}
			found = p
		}
	}
	return found, found != nil
}

// Writers is how many users hold write permission on n.
func (n *Node) Writers() int { return int(n.writers.Load()) }

// IsRoot says whether no node uses n as a child (QEMU's
// bdrv_is_root_node, as block jobs' device lookup asks it).
func (n *Node) IsRoot() bool {
	n.g.mu.Lock()
	defer n.g.mu.Unlock()
	return len(n.parents) == 0
}

// BackingName is the backing file name n's image header records ("" for
// none, or a format without one).
func (n *Node) BackingName() string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return headerBacking(n)
}
