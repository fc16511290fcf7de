package block

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// The end of a mirror (blockdev-mirror, active block-commit): the
// source is held still while the job makes sure nothing is left to
// copy, and then every user of the source moves onto the target (QEMU's
// bdrv_replace_node), before anything else may reach either.
//
// Lock order. Every goroutine takes these in this order, outermost first,
// and never one above a lock it holds:
//
//  1. the graph lock, g.mu;
//  2. a backend's io lock, b.io, for writing (a snapshot's switch, a
//     Hold): only with g.mu held;
//  3. node drains (gate.begin, drainNodes): begun with g.mu held, in
//     drainOrder (parents before children); a drain is shared, not
//     exclusive, so draining a node already drained only waits for
//     requests in flight, of which there are none;
//  4. a node's own lock, n.mu (a reopen's commit; IO holds it shared).
//
// Requests take b.io shared, then the gates of the nodes they pass, then
// n.mu shared, and never g.mu; so a drain or an io lock taken under g.mu
// waits only for requests, which wait for nothing g.mu guards.
//
// Hold is the one exception: it keeps the io locks and drains it took
// under g.mu after letting g.mu go, until release, and in between its
// holder takes g.mu again (Replace). To keep that from deadlocking,
// nothing done under g.mu may wait for what a Hold keeps:
//   - a held backend's io lock (Backend.held): a snapshot of its node is
//     refused (errHeld) rather than waiting for it;
//   - a request waiting at a held node's gate while counted in another
//     node's in-flight count, which a drain under g.mu would wait for:
//     only a parent or user added after the Hold could do that (the Hold
//     drained every ancestor it had), so a held node takes no new parent
//     (Add, Reopen, Snapshot) and no new user (Attach), and is not
//     deleted, until release;
//   - a second Hold waits for the first's release (holdDone, which lets
//     g.mu go while it waits), holding nothing.
// release takes g.mu: it must not be called with g.mu held (no graph
// method calls it; block jobs call it from their own goroutines).
//
// For block jobs (and their filter nodes): call graph methods only from
// the job's goroutine with none of the job's copies in flight (a request
// waiting on a copy in serialise.go sits inside a drained node's count,
// and the graph method may drain that node under g.mu); insert or remove
// a filter above a node before Hold or after release, never between (a
// held node takes no new parent); and release every Hold before the
// job's last graph change (Detach of its backend, SetReadOnly).

// Hold holds n still for a switch: the requests its backends have in
// flight end and new ones wait (their io locks, as a snapshot's switch
// takes them), then n and every node above it is drained. Nothing
// reaches n until release is called; n's children still serve the
// holder (a mirror flushing its target, which may be below n). See the
// lock order above for what the graph refuses meanwhile.
func (g *Graph) Hold(n *Node) (release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.holds > 0 {
		g.holdDone.Wait()
	}
	users := slices.Clone(n.users)
	nodes := drainOrder([]*Node{n})
	for _, b := range users {
		b.io.Lock()
		b.held = true
	}
	end := drainNodes(nodes)
	for _, m := range nodes {
		m.held = true
	}
	g.holds++
	return sync.OnceFunc(func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, m := range nodes {
			m.held = false
		}
		end()
		for _, b := range slices.Backward(users) {
			b.held = false
			b.io.Unlock()
		}
		g.holds--
		g.holdDone.Broadcast()
	})
}

// errHeld refuses what would wait for a Hold (see the lock order): the
// node is being switched by a block job.
func errHeld(name string) error {
	return fmt.Errorf("Node '%s' is busy: block device is in use by block job: mirror", name)
}

// AttachOwning is Attach for a backend that owns node (QEMU's -drive,
// whose nodes only its BlockBackend references): when a mirror's switch
// moves the backend away, node is closed, as QEMU frees it then.
func (g *Graph) AttachOwning(name string, node *Node, perm Perm) (*Backend, error) {
	b, err := g.Attach(name, node, perm)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	b.owns = node
	g.mu.Unlock()
	return b, nil
}

// Replace moves every backend and parent of from onto to: a backend's
// write permission is taken on to first (a refusal changes nothing),
// the parents take to as their child in one reopen. from must be held
// (Hold) by the caller, which releases it after. from itself stays in
// the graph as it was, no longer used by anything that used it, unless
// a backend that owned it moved (AttachOwning): then it is closed.
//
// handover, if set, is a backend on to holding write permission (the
// job's, for its copy): the first writing backend of from takes its
// permission over instead of taking a new one, so that to's writer
// count never drops to zero and its files stay open read-write through
// the switch; handover is gone from to afterwards.
func (g *Graph) Replace(from, to *Node, handover *Backend) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if from == to {
		return fmt.Errorf("Can't replace node '%s' with itself", from.name)
	}
	var parents []*Node
	for _, p := range slices.SortedFunc(maps.Keys(from.parents), func(a, b *Node) int { return strings.Compare(a.name, b.name) }) {
		// A parent in to's own chain (active commit: to is below from)
		// keeps from: giving it to would make a cycle.
		if !to.hasDescendant(p) {
			parents = append(parents, p)
		}
	}
	for _, p := range parents {
		if _, ok := p.img.(Reopener); !ok {
			return fmt.Errorf("Cannot change the option '%s' of node '%s'", from.parents[p], p.name)
		}
	}
	if handover != nil && (handover.node.Load() != to || !handover.perm.Write || !slices.Contains(to.users, handover)) {
		handover = nil
	}

	users := slices.Clone(from.users)
	var took *Backend    // took handover's permission
	var wrote []*Backend // took a new write permission on to
	undo := func() {
		for _, b := range slices.Backward(wrote) {
			g.dropWriter(to, b.perm.ShareWrite, b.name)
		}
		if took != nil {
			g.retagWriter(to, took.perm.ShareWrite, handover.perm.ShareWrite)
		}
	}
	for _, b := range users {
		if !b.perm.Write {
			continue
		}
		if handover != nil && took == nil {
			others, shared := to.writers.Load()-1, to.sharedWriters
			if handover.perm.ShareWrite {
				shared--
			}
			if others > 0 && !(b.perm.ShareWrite && shared == others) {
				undo()
				return fmt.Errorf("Conflicts with another writer of node '%s', which does not share 'write'", to.name)
			}
			g.retagWriter(to, handover.perm.ShareWrite, b.perm.ShareWrite)
			took = b
			continue
		}
		if err := g.addWriter(to, b.perm.ShareWrite); err != nil {
			undo()
			return err
		}
		wrote = append(wrote, b)
	}
	var items []reopenItem
	for _, p := range parents {
		items = append(items, withChild(p, from.parents[p], to))
	}
	if len(items) > 0 {
		if err := g.reopenNodes(items); err != nil {
			undo()
			return err
		}
	}
	if took != nil {
		to.users = slices.DeleteFunc(to.users, func(b *Backend) bool { return b == handover })
	}
	// The users keep their order of arrival on to.
	from.users = slices.DeleteFunc(from.users, func(b *Backend) bool { return slices.Contains(users, b) })
	to.users = append(to.users, users...)
	slices.SortFunc(to.users, func(a, b *Backend) int { return cmp.Compare(a.seq, b.seq) })
	for _, b := range users {
		b.node.Store(to)
		if b.perm.Write {
			// from keeps no writer of its own: the backend's write
			// permission now lives on to.
			g.dropWriter(from, b.perm.ShareWrite, b.name)
		}
	}
	// A node only the backends that moved kept open goes, with the
	// children it made, as QEMU frees it when its last reference drops.
	owned := false
	for _, b := range users {
		if b.owns == from {
			b.owns, owned = nil, true
		}
	}
	if owned && len(from.users) == 0 && len(from.parents) == 0 {
		g.remove(from)
	}
	g.releasePerms()
	return nil
}

// retagWriter changes whether one of n's writers (and so of its file
// children) shares write access, keeping the count.
func (g *Graph) retagWriter(n *Node, wasShared, shared bool) {
	for ; n != nil && wasShared != shared; n = n.children["file"] {
		if shared {
			n.sharedWriters++
		} else {
			n.sharedWriters--
		}
	}
}

// CheckNewNodeName is QEMU's bdrv_assign_node_name's refusals of a name
// for a node about to be made (a job's filter-node-name): invalid, taken
// by a node, or a backend's name.
func (g *Graph) CheckNewNodeName(name string) error {
	if err := checkNodeName(name); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.backends[name] != nil {
		return fmt.Errorf("node-name=%s is conflicting with a device id", name)
	}
	if g.nodes[name] != nil {
		return fmt.Errorf("Duplicate nodes with node-name='%s'", name)
	}
	return nil
}
