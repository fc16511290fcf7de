package block

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Perms is a set of QEMU's block permissions (BLK_PERM_*): what a parent
// or user of a node needs of it, or lets others do.
type Perms uint8

// QEMU 7.2's permissions, in its bit order (6.2 dropped "change
// children", which was bit 4).
const (
	PermConsistentRead Perms = 1 << iota
	PermWrite
	PermWriteUnchanged
	PermResize

	PermAll = PermConsistentRead | PermWrite | PermWriteUnchanged | PermResize
)

var permNames = [...]string{"consistent read", "write", "write unchanged", "resize"}

// String names the permissions as QEMU's messages do: "write, resize".
func (p Perms) String() string {
	var names []string
	for i, name := range permNames {
		if p&(1<<i) != 0 {
			names = append(names, name)
		}
	}
	return strings.Join(names, ", ")
}

// PermSetter is a driver that acts on what its node's parents and users
// need of it and let others do — the file driver holds them as image
// locks. PreparePerm tests and takes what the change needs without giving
// up anything (a conflict is an error and changes nothing); Commit leaves
// the driver holding exactly perm and shared, Abort as it was. A reopen
// passes a Reopener its permissions in the ReopenRequest instead.
type PermSetter interface {
	PreparePerm(perm, shared Perms) (Pending, error)
}

// ChildPermFunc is a format driver's rule for what it needs of a child
// (QEMU's bdrv_child_perm): role is the child's ("file", "backing"), o the
// node's options, writable whether the node is not read-only, perm and
// shared what the node's own parents and users need of it and share.
type ChildPermFunc func(role string, o Options, writable bool, perm, shared Perms) (Perms, Perms)

// DefaultChildPerm is QEMU's rule for a format's children
// (bdrv_default_perms): "file" holds the image's data and metadata,
// "backing" is read for copy-on-write, any other child passes its
// parent's permissions through.
func DefaultChildPerm(role string, _ Options, writable bool, perm, shared Perms) (Perms, Perms) {
	switch role {
	case "file":
		return StoragePerms(true, true, writable, perm, shared)
	case "backing":
		return CowPerms(perm, shared)
	}
	return perm, shared
}

// StoragePerms is what a format needs of a child holding its metadata
// and/or guest data (QEMU's bdrv_default_perms_for_storage): metadata is
// always read consistently, written whenever the format is writable
// (whether or not anyone writes through it), and no one else may write or
// resize it; data may not be resized by others, and is written (and so
// may grow) when the format's users write.
func StoragePerms(metadata, data, writable bool, perm, shared Perms) (Perms, Perms) {
	if metadata {
		if writable {
			perm |= PermWrite | PermResize
		}
		perm |= PermConsistentRead
		shared &^= PermWrite | PermResize
	}
	if data {
		shared &^= PermResize
		if perm&PermWriteUnchanged != 0 {
			perm |= PermWrite
		}
		if perm&PermWrite != 0 {
			perm |= PermResize
		}
	}
	return perm, shared
}

// CowPerms is what a format needs of its backing child (QEMU's
// bdrv_default_perms_for_cow): consistent reads if its own users need
// them, nothing else; others may write and resize the backing file only if
// the format's users let others write.
func CowPerms(perm, shared Perms) (Perms, Perms) {
	perm &= PermConsistentRead
	if shared&PermWrite != 0 {
		shared = PermWrite | PermResize
	} else {
		shared = 0
	}
	return perm, shared | PermConsistentRead | PermWriteUnchanged
}

// perms is what a backend needs of its node: consistent reads, and
// writes if it writes; it shares everything (QEMU's blk_new_open, which
// -drive and qemu-io use: a guest device would add its own restrictions),
// unless it reads the node as an image's file.
func (b *Backend) perms() (perm, shared Perms) {
	perm = PermConsistentRead
	if b.perm.Write {
		perm |= PermWrite
	}
	if b.perm.Image {
		return StoragePerms(true, true, b.perm.Write, perm, PermAll)
	}
	return perm, PermAll
}

// permView is the graph as a reopen would leave it: the reopened nodes
// with their new state, options and children.
type permView struct {
	items map[*Node]*reopenItem
}

func (v permView) state(n *Node) nodeState {
	if it := v.items[n]; it != nil {
		return it.state
	}
	return n.state
}

func (v permView) children(n *Node) map[string]*Node {
	if it := v.items[n]; it != nil {
		return it.children
	}
	return n.children
}

func (v permView) opts(n *Node) Options {
	if it := v.items[n]; it != nil {
		return it.opts
	}
	return n.opts
}

// permEdge is a parent's (or a user's) use of a node.
type permEdge struct {
	parent *Node    // nil for a user
	user   *Backend // nil for a parent
	role   string
	seq    uint64
	perm   Perms
	shared Perms
}

func (e permEdge) desc() string {
	switch {
	case e.parent != nil:
		return fmt.Sprintf("node '%s'", e.parent.name)
	case e.user.name != "":
		return fmt.Sprintf("block device '%s'", e.user.name)
	}
	return "an unnamed block device"
}

// permPlan is what every node's parents and users need of it and share.
type permPlan struct {
	order []*Node // parents before children
	edges map[*Node][]permEdge
	perm  map[*Node]Perms
	share map[*Node]Perms
}

// permNodes are the nodes a permission refresh covers: the graph's and
// those still opening.
func (g *Graph) permNodes() []*Node {
	return append(slices.Clone(g.order), g.opening...)
}

// planPerms computes, as QEMU's bdrv_refresh_perms does, what each node
// must hold after a change described by v, and checks it: no two users of
// a node may need what the other does not share, and nothing may write a
// read-only node. g.mu must be held.
func (g *Graph) planPerms(v permView, checked bool) (*permPlan, error) {
	nodes := g.permNodes()
	parentsOf := map[*Node][]*Node{}
	for _, p := range nodes {
		for _, key := range slices.Sorted(maps.Keys(v.children(p))) {
			c := v.children(p)[key]
			if l := parentsOf[c]; len(l) == 0 || l[len(l)-1] != p { // once, whatever its roles
				parentsOf[c] = append(parentsOf[c], p)
			}
		}
	}
	plan := &permPlan{edges: map[*Node][]permEdge{}, perm: map[*Node]Perms{}, share: map[*Node]Perms{}}
	done := map[*Node]bool{}
	var visit func(n *Node, depth int)
	visit = func(n *Node, depth int) {
		if done[n] || depth > maxGraphDepth {
			return
		}
		done[n] = true
		var edges []permEdge
		for _, p := range parentsOf[n] {
			visit(p, depth+1)
			for _, key := range slices.Sorted(maps.Keys(v.children(p))) {
				if v.children(p)[key] != n {
					continue
				}
				rule := p.drv.ChildPerm
				if rule == nil {
					rule = DefaultChildPerm
				}
				perm, shared := rule(key, v.opts(p), !v.state(p).readOnly, plan.perm[p], plan.share[p])
				if v.state(n).forceShare {
					shared = PermAll
				}
				seq, linked := n.attached[p]
				if !linked {
					seq = g.seq + 1 // to be attached: the newest
				}
				edges = append(edges, permEdge{parent: p, role: key, seq: seq, perm: perm, shared: shared})
			}
		}
		for _, b := range n.users {
			perm, shared := b.perms()
			if v.state(n).forceShare { // (an image user: qemu-img check -U)
				shared = PermAll
			}
			edges = append(edges, permEdge{user: b, role: "root", seq: b.seq, perm: perm, shared: shared})
		}
		// Newest first, the order QEMU lists a node's parents in.
		slices.SortStableFunc(edges, func(a, b permEdge) int { return cmp.Compare(b.seq, a.seq) })
		perm, shared := Perms(0), PermAll
		for _, e := range edges {
			perm |= e.perm
			shared &= e.shared
		}
		plan.edges[n], plan.perm[n], plan.share[n] = edges, perm, shared
		plan.order = append(plan.order, n)
	}
	for _, n := range nodes {
		visit(n, 0)
	}
	for _, n := range plan.order {
		if err := plan.check(n, v); err != nil && checked {
			return nil, err
		}
	}
	return plan, nil
}

// check refuses what QEMU refuses of n's parents and users, in its words.
func (plan *permPlan) check(n *Node, v permView) error {
	edges := plan.edges[n]
	for _, a := range edges {
		for _, b := range edges {
			if a == b {
				continue
			}
			if conflict := b.perm &^ a.shared; conflict != 0 {
				return fmt.Errorf("Permission conflict on node '%s': permissions '%s' are both required by %s (uses node '%s' as '%s' child) and unshared by %s (uses node '%s' as '%s' child).",
					n.name, conflict, b.desc(), n.name, b.role, a.desc(), n.name, a.role)
			}
		}
	}
	if plan.perm[n]&(PermWrite|PermWriteUnchanged) != 0 && v.state(n).readOnly {
		if n.state.readOnly {
			return ErrReadOnly
		}
		return fmt.Errorf("Read-only block node '%s' cannot support read-write users", n.name)
	}
	return checkAlignedSize(n, plan.perm[n])
}

// changed reports whether n is to hold other permissions than it does.
func (plan *permPlan) changed(n *Node) bool {
	return plan.perm[n] != n.perm || plan.share[n] != n.shared
}

// preparePerms prepares the drivers of the plan's changed nodes, except
// skip (reopened nodes, which get theirs in the reopen request). On error
// nothing is left prepared.
func (plan *permPlan) preparePerms(skip map[*Node]*reopenItem) ([]Pending, error) {
	var pendings []Pending
	for _, n := range plan.order {
		if skip[n] != nil || !plan.changed(n) {
			continue
		}
		s, ok := n.img.(PermSetter)
		if !ok {
			continue
		}
		p, err := s.PreparePerm(plan.perm[n], plan.share[n])
		if err != nil {
			for _, p := range pendings {
				p.Abort()
			}
			return nil, err
		}
		pendings = append(pendings, p)
	}
	return pendings, nil
}

// record notes that every node now holds what the plan says.
func (plan *permPlan) record() {
	for _, n := range plan.order {
		n.perm, n.shared = plan.perm[n], plan.share[n]
	}
}

// refreshPerms gives every node what its parents and users need now,
// reopening the auto-read-only nodes whose write access that changes
// (through the one reopen transaction); on error nothing changed. g.mu
// must be held.
func (g *Graph) refreshPerms() error { return g.transact(nil, true) }

// releasePerms is refreshPerms after something was taken away (a node, a
// parent, a user): it only gives up permissions, which cannot conflict.
// An auto-read-only node that cannot go back to read-only (its flush
// failed) stays read-write, which is safe: the permissions go all the
// same.
func (g *Graph) releasePerms() {
	if g.transact(nil, false) == nil {
		return
	}
	plan, _ := g.planPerms(permView{}, false)
	skip := map[*Node]*reopenItem{}
	for _, n := range plan.order {
		if n.img != nil && n.state.writableFor(plan.perm[n]) != n.rw {
			skip[n] = &reopenItem{} // keeps the locks it holds, as its fds
		}
	}
	pendings, _ := plan.preparePerms(skip)
	for _, p := range pendings {
		p.Commit()
	}
	for _, n := range plan.order {
		if skip[n] == nil {
			n.perm, n.shared = plan.perm[n], plan.share[n]
		}
	}
}

// Perms is what a node holds: what its parents and users need of it,
// and what they let others do.
func (n *Node) Perms() (perm, shared Perms) {
	n.g.mu.Lock()
	defer n.g.mu.Unlock()
	return n.perm, n.shared
}
