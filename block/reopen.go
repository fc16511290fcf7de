package block

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
)

// reopenItem is one node's part of a reopen transaction.
type reopenItem struct {
	node     *Node
	state    nodeState
	opts     Options // in force after the reopen
	own      Options // as given (before inheriting)
	children map[string]*Node
}

// Reopen reopens a list of nodes as one transaction (blockdev-reopen):
// every node is prepared (new fds opened) before any is committed, and if
// one fails, all are aborted and nothing observable has changed. As in
// QEMU, options not given take their defaults, a format's "file" must be
// named again (it may name another node), "backing" must be given for a
// node that has or names a backing file (another node, or null to drop
// it), and children a node created inline are reopened with it, taking
// what they inherit from it.
func (g *Graph) Reopen(list []Options) error { return g.reopen(list, false) }

// ReopenKeepOld is Reopen as qemu-io's reopen does it (QEMU's bdrv_reopen
// with keep_old_opts): no QAPI schema is checked (values come as strings
// and are parsed by the layer that takes them), the options a child made
// inline is given are put over those it has, and the errors name the
// option as the node itself knows it ('driver', not 'options[0].file.driver').
func (g *Graph) ReopenKeepOld(list []Options) error { return g.reopen(list, true) }

func (g *Graph) reopen(list []Options, keepOld bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	prefixOf := func(i int) string {
		if keepOld {
			return ""
		}
		return fmt.Sprintf("options[%d].", i)
	}
	// QAPI checks every entry before anything runs.
	for i, o := range list {
		if keepOld {
			break
		}
		if _, err := g.checkOptions(o, prefixOf(i)); err != nil {
			return err
		}
	}
	var items []reopenItem
	for i, o := range list {
		name, _ := o.String("node-name", "")
		if name == "" {
			return fmt.Errorf("node-name not specified")
		}
		n := g.nodes[name]
		if n == nil {
			return fmt.Errorf("Failed to find node with node-name='%s'", name)
		}
		tree, err := g.reopenTree(n, o, o, prefixOf(i), "", keepOld)
		if err != nil {
			return err
		}
		for _, it := range tree {
			if slices.ContainsFunc(items, func(x reopenItem) bool { return x.node == it.node }) {
				return fmt.Errorf("Node '%s' is listed twice", it.node.name)
			}
		}
		items = append(items, tree...)
	}
	if err := checkNewChildren(items); err != nil {
		return err
	}
	for _, it := range items {
		for key, c := range it.children {
			if c != it.node.children[key] && c.held {
				return errHeld(c.name) // a new parent of a held node (pivot.go)
			}
		}
	}
	return g.reopenNodes(items)
}

// checkNewChildren refuses a writable node a read-only new file child,
// with the states the transaction leaves both in (QEMU's permission
// check: a read-write format needs write on its file).
//
// It also refuses a cycle that the entries make together (each entry was
// checked against the graph as it is): QEMU applies each entry's child
// change before checking the next.
func checkNewChildren(items []reopenItem) error {
	stateOf := func(c *Node) nodeState {
		for _, it := range items {
			if it.node == c {
				return it.state
			}
		}
		return c.state
	}
	childrenOf := func(n *Node) map[string]*Node {
		for _, it := range items {
			if it.node == n {
				return it.children
			}
		}
		return n.children
	}
	var reaches func(from, to *Node, depth int) bool
	reaches = func(from, to *Node, depth int) bool {
		if from == to {
			return true
		}
		for _, c := range childrenOf(from) {
			if depth < maxGraphDepth && reaches(c, to, depth+1) {
				return true
			}
		}
		return false
	}
	for _, it := range items {
		for _, key := range slices.Sorted(maps.Keys(it.children)) {
			c := it.children[key]
			if c != it.node.children[key] && reaches(c, it.node, 0) {
				return fmt.Errorf("Making '%s' a %s child of '%s' would create a cycle", c.name, key, it.node.name)
			}
		}
	}
	for _, it := range items {
		f := it.children["file"]
		if f == nil || f == it.node.children["file"] || it.state.readOnly || it.state.autoReadOnly {
			continue
		}
		if stateOf(f).readOnly {
			return ErrReadOnly
		}
	}
	return nil
}

// maxGraphDepth bounds walks of a graph that a transaction might have
// made cyclic (they are refused, but must be found first).
const maxGraphDepth = 4096

// hasDescendant: d is n or below it.
func (n *Node) hasDescendant(d *Node) bool {
	if n == d {
		return true
	}
	for _, c := range n.children {
		if c.hasDescendant(d) {
			return true
		}
	}
	return false
}

// reopenTree makes the items that reopen n with opts (own: as given,
// before inheriting), then those of the children n created inline. prefix
// names the entry in QAPI messages ("options[0]."), path the child in
// "Cannot change" ones ("file."); with keepOld (ReopenKeepOld) both stay
// empty, and a child's options given inline go over its own.
func (g *Graph) reopenTree(n *Node, opts, own Options, prefix, path string, keepOld bool) ([]reopenItem, error) {
	if drv, _ := opts.String("driver", ""); drv != n.drv.Name {
		return nil, fmt.Errorf("Cannot change the option '%sdriver'", path)
	}
	if _, given := opts["node-name"]; given && (path != "" || keepOld && nodeNameOf(opts) != n.name) {
		// An inline child's name is generated; blockdev-reopen refuses
		// any, even its own. qemu-io's reopen takes an unchanged one.
		return nil, fmt.Errorf("Cannot change the option 'node-name'")
	}
	if _, given := opts["discard"]; !given && n.state.discard == "unmap" {
		// QEMU's one exception to "omitted means default": discard=unmap
		// stays once set.
		opts = opts.Clone()
		opts["discard"] = "unmap"
	}
	state, err := parseState(opts, prefix)
	if err != nil {
		return nil, err
	}
	for _, k := range slices.Sorted(maps.Keys(n.drv.Options)) {
		if n.drv.Options[k] == OptChild || slices.Contains(n.drv.Reopenable, k) {
			continue
		}
		was, _ := n.opts.get(k, n.drv.Options[k])
		now, _ := opts.get(k, n.drv.Options[k])
		switch {
		case reflect.DeepEqual(was, now):
		case now == nil:
			return nil, fmt.Errorf("Option '%s%s' cannot be reset to its default value", path, k)
		default:
			return nil, fmt.Errorf("Cannot change the option '%s%s'", path, k)
		}
	}
	children := maps.Clone(n.children)
	var below []reopenItem
	for _, key := range n.drv.children() {
		cur := n.children[key]
		v, given := opts[key]
		var child *Node
		var childOwn Options // non-nil: reopen child, inheriting from opts
		switch ref, _ := convert(v, OptChild, key); ref := ref.(type) {
		case nil:
			if given { // "backing": null
				delete(children, key)
				continue
			}
			if key == "backing" && (cur != nil || headerBacking(n) != "") {
				return nil, fmt.Errorf("backing is missing for '%s'", n.name)
			}
			if cur == nil {
				continue
			}
			if child = cur; child.implicit {
				childOwn = child.own
			}
		case string:
			if child = g.nodes[ref]; child == nil {
				return nil, fmt.Errorf("Cannot find device='' nor node-name='%s'", ref)
			}
			if child == cur && child.implicit {
				childOwn = child.own
			}
			if child != cur && child.hasDescendant(n) {
				return nil, fmt.Errorf("Making '%s' a %s child of '%s' would create a cycle", ref, key, n.name)
			}
		case Options:
			if cur == nil || !cur.implicit {
				// Only a child made inline can be given new options inline.
				return nil, fmt.Errorf("Cannot change the option '%s%s.driver'", path, key)
			}
			child, childOwn = cur, ref
			if keepOld {
				childOwn = mergeOptions(cur.own.Clone(), ref)
			}
		}
		if child != cur {
			if _, ok := n.img.(Reopener); !ok {
				return nil, fmt.Errorf("Cannot change the option '%s%s'", path, key)
			}
		}
		children[key] = child
		if childOwn != nil {
			cprefix, cpath := prefix+key+".", path+key+"."
			if keepOld {
				cprefix, cpath = "", ""
			}
			items, err := g.reopenTree(child, inherit(childOwn, childParent(n.drv, key, opts)), childOwn, cprefix, cpath, keepOld)
			if err != nil {
				return nil, err
			}
			below = append(below, items...)
		}
	}
	writers := n.writers.Load()
	if writers > 0 && state.readOnly {
		return nil, fmt.Errorf("Cannot make node '%s' read-only: it is in use for writing", n.name)
	}
	self := reopenItem{node: n, state: state, opts: opts, own: own, children: children}
	return append([]reopenItem{self}, below...), nil
}

// reopenNodes prepares every item, then commits all or aborts all. This
// is the one path for blockdev-reopen and for internal reopens, and the
// only thing that changes a node's fds: a node whose write access
// follows its permissions (auto-read-only) and would now hold it, or
// lose it, is reopened in the same transaction, its options unchanged.
// g.mu must be held. The nodes are drained throughout: no request runs
// between the flush of a node losing write access and the commit, nor
// sees half a transaction.
func (g *Graph) reopenNodes(items []reopenItem) error { return g.transact(items, true) }

// transact is reopenNodes; unchecked, it only gives permissions up
// (releasePerms), which cannot conflict.
func (g *Graph) transact(items []reopenItem, checked bool) error {
	items = slices.Clone(items)
	view := func() permView {
		v := permView{items: map[*Node]*reopenItem{}}
		for i := range items {
			v.items[items[i].node] = &items[i]
		}
		return v
	}
	// What every node needs after the transaction, checked as QEMU's
	// bdrv_reopen_multiple does before anything commits: reopened drivers
	// get theirs in the request, the other nodes whose parents change
	// theirs prepared here.
	plan, err := g.planPerms(view(), checked)
	if err != nil {
		return err
	}
	listed := view().items
	explicit := len(items)
	for _, n := range plan.order {
		if listed[n] != nil || n.img == nil { // (n.img: not yet open, being added)
			continue
		}
		if n.state.writableFor(plan.perm[n]) != n.rw {
			items = append(items, reopenItem{node: n, state: n.state, opts: n.opts, own: n.own, children: n.children})
		}
	}
	if len(items) == 0 {
		pendings, err := plan.preparePerms(nil)
		if err != nil {
			return err
		}
		for _, p := range pendings {
			p.Commit()
		}
		plan.record()
		return nil
	}
	end := drainNodes(drainOrder(reopenTops(items)))
	defer end()
	writable := func(it reopenItem) bool { return it.state.writableFor(plan.perm[it.node]) }
	// Nodes losing write access are flushed while they still have it,
	// parents before children, as QEMU's bdrv_reopen_multiple does
	// before preparing any.
	for i := 0; i < len(items); i++ {
		it := items[i]
		if it.node.rw && !writable(it) {
			if err := it.node.flush(); err != nil {
				if i < explicit {
					return reopenFlushError{err}
				}
				// A node that only follows its permissions and cannot
				// flush stays read-write, which is safe; the change that
				// took its write permission away still goes through.
				items = slices.Delete(items, i, i+1)
				i--
			}
		}
	}
	// A node being written that gets another file child hands its
	// writers over: the new child takes them before anything commits (and
	// may refuse: read-only, or written by another user without sharing),
	// the old one loses them after.
	moved, err := g.moveWriters(items)
	if err != nil {
		return err
	}
	reopeners := map[*Node]*reopenItem{}
	for i := range items {
		if _, ok := items[i].node.img.(Reopener); ok {
			reopeners[items[i].node] = &items[i]
		}
	}
	permPendings, err := plan.preparePerms(reopeners)
	if err != nil {
		moved.undo(g)
		return err
	}
	pendings := make([]Pending, len(items))
	abort := func() {
		for _, p := range pendings {
			if p != nil {
				p.Abort()
			}
		}
		for _, p := range permPendings {
			p.Abort()
		}
		moved.undo(g)
	}
	for i, it := range items {
		r, ok := it.node.img.(Reopener)
		if !ok {
			continue
		}
		driverOpts := Options{}
		for k := range it.node.drv.Options {
			if v, ok := it.opts[k]; ok {
				driverOpts[k] = v
			}
		}
		p, err := r.PrepareReopen(&ReopenRequest{
			Writable: writable(it), Direct: it.state.direct, NoFlush: it.state.noFlush,
			Unmap: it.state.discard == "unmap", Options: driverOpts, Files: g.files, Children: it.children,
			Perm: plan.perm[it.node], Shared: plan.share[it.node],
		})
		if err != nil {
			abort()
			return err
		}
		pendings[i] = p
	}
	olds := make([]map[string]*Node, len(items))
	for i, it := range items {
		n := it.node
		n.mu.Lock()
		if pendings[i] != nil {
			pendings[i].Commit()
			// A reopen that changes what the node is (raw's window).
			if r, ok := pendings[i].(Resizer); ok {
				if size, changed := r.NewLength(); changed {
					n.length.Store(roundToSector(size))
				}
			}
		}
		n.rw = writable(it)
		n.state = it.state
		n.opts, n.own = it.opts, it.own
		olds[i] = n.children
		n.children = it.children
		n.mu.Unlock()
	}
	// Before any old child goes (closed, or reopened when its last writer
	// leaves): each node holds what the plan says from here on.
	for _, p := range permPendings {
		p.Commit()
	}
	plan.record()
	var dropped bool
	for i, it := range items {
		n, old := it.node, olds[i]
		for key, c := range it.children {
			c.parents[n] = key
			if old[key] != c {
				g.seq++
				c.attached[n] = g.seq
			}
		}
		for key, c := range old {
			if it.children[key] != c {
				moved.release(g, n, c)
				delete(c.parents, n)
				delete(c.attached, n)
				dropped = true
				if c.implicit && len(c.parents) == 0 {
					g.remove(c)
				}
			}
		}
	}
	if dropped {
		// An old child kept by another parent may need less now (an
		// auto-read-only file going back to read-only).
		g.releasePerms()
	}
	// Still drained: O_DIRECT's alignment and new children's limits
	// hold from the first request after.
	reopened := make([]*Node, len(items))
	for i, it := range items {
		reopened[i] = it.node
	}
	g.refreshLimits(reopened)
	return nil
}

// writerMove is a node's writers handed from its old file child to the
// new one.
type writerMove struct {
	node, from, to *Node
	writers        int32
	sharedWriters  int32
}

type writerMoves []writerMove

// moveWriters gives each changed file child of a node being written that
// node's writers; on error nothing has moved.
func (g *Graph) moveWriters(items []reopenItem) (writerMoves, error) {
	var moves writerMoves
	for _, it := range items {
		n := it.node
		from, to := n.children["file"], it.children["file"]
		w := n.writers.Load()
		if w == 0 || from == to || to == nil {
			continue
		}
		m := writerMove{node: n, from: from, to: to}
		for i := int32(0); i < w; i++ {
			share := i < n.sharedWriters
			if err := g.addWriter(to, share); err != nil {
				m.undo(g)
				moves.undo(g)
				return nil, err
			}
			m.writers++
			if share {
				m.sharedWriters++
			}
		}
		moves = append(moves, m)
	}
	return moves, nil
}

func (m writerMove) undo(g *Graph) {
	for i := int32(0); i < m.writers; i++ {
		g.dropWriter(m.to, i < m.sharedWriters, "")
	}
}

func (ms writerMoves) undo(g *Graph) {
	for _, m := range ms {
		m.undo(g)
	}
}

// release takes the moved writers away from old, the file child n has
// just let go of.
func (ms writerMoves) release(g *Graph, n, old *Node) {
	for _, m := range ms {
		if m.node == n && m.from == old {
			for i := int32(0); i < m.writers; i++ {
				g.dropWriter(old, i < m.sharedWriters, "")
			}
		}
	}
}

// reopenTops are the items' nodes that no other item's node is above:
// draining them (and their parents) holds back every request that could
// reach the transaction, while the nodes below them still serve the
// requests their drivers make to flush and write back.
func reopenTops(items []reopenItem) []*Node {
	in := map[*Node]bool{}
	for _, it := range items {
		in[it.node] = true
	}
	var below func(n *Node) bool // an item's node is above n
	below = func(n *Node) bool {
		for p := range n.parents {
			if in[p] || below(p) {
				return true
			}
		}
		return false
	}
	var tops []*Node
	for _, it := range items {
		if !below(it.node) {
			tops = append(tops, it.node)
		}
	}
	return tops
}

// headerBacking is the backing file the node's image names, if any.
func headerBacking(n *Node) string {
	if b, ok := n.img.(BackingNamer); ok {
		return b.BackingFile()
	}
	return ""
}

// reopenFlushError is a failed flush of a node losing write access, in
// QEMU's words; errors.Is/As still reach the node's error beneath.
type reopenFlushError struct{ err error }

func (e reopenFlushError) Error() string { return "Error flushing drive: " + strerror(e.err) }
func (e reopenFlushError) Unwrap() error { return e.err }

// mergeOptions puts src over dst, nested options merged key by key, and
// returns dst.
func mergeOptions(dst, src Options) Options {
	for k, v := range src {
		if s, ok := v.(Options); ok {
			if d, ok := dst[k].(Options); ok {
				dst[k] = mergeOptions(d.Clone(), s)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

// nodeNameOf is the node-name opts give, whatever form it came in
// (a string, or a keyval value).
func nodeNameOf(opts Options) string {
	if s, err := opts.String("node-name", ""); err == nil {
		return s
	}
	return fmt.Sprint(opts["node-name"])
}

// Resizer is a reopen's Pending that changes the node's length (raw's
// offset and size): once committed, NewLength says to what.
type Resizer interface {
	NewLength() (size int64, changed bool)
}
