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
	writers  int32 // the writer count the new state is for
}

// Reopen reopens a list of nodes as one transaction (blockdev-reopen):
// every node is prepared (new fds opened) before any is committed, and if
// one fails, all are aborted and nothing observable has changed. As in
// QEMU, options not given take their defaults, a format's "file" must be
// named again, a "backing" not given stays, and children a node created
// inline are reopened with it, taking what they inherit from it.
func (g *Graph) Reopen(list []Options) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	// QAPI checks every entry before anything runs.
	for i, o := range list {
		if _, err := g.checkOptions(o, fmt.Sprintf("options[%d].", i)); err != nil {
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
		tree, err := g.reopenTree(n, o, o, fmt.Sprintf("options[%d].", i), "")
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
	return g.reopenNodes(items)
}

// reopenTree makes the items that reopen n with opts (own: as given,
// before inheriting), then those of the children n created inline. prefix
// names the entry in QAPI messages ("options[0]."), path the child in
// "Cannot change" ones ("file.").
func (g *Graph) reopenTree(n *Node, opts, own Options, prefix, path string) ([]reopenItem, error) {
	if drv, _ := opts.String("driver", ""); drv != n.drv.Name {
		return nil, fmt.Errorf("Cannot change the option '%sdriver'", path)
	}
	if _, given := opts["node-name"]; given && path != "" {
		// An inline child's name is generated; QEMU refuses any, even its own.
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
		if n.drv.Options[k] == OptChild {
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
			if child = cur; child != nil && child.implicit {
				childOwn = child.own
			}
		case string:
			if child = g.nodes[ref]; child == nil {
				return nil, fmt.Errorf("Cannot find device='' nor node-name='%s'", ref)
			}
			if child == cur && child.implicit {
				childOwn = child.own
			}
		case Options:
			if cur == nil || !cur.implicit {
				// Only a child made inline can be given new options inline.
				return nil, fmt.Errorf("Cannot change the option '%s%s.driver'", path, key)
			}
			child, childOwn = cur, ref
		}
		if child != cur && n.writers.Load() > 0 {
			return nil, fmt.Errorf("Cannot change the '%s' child of node '%s' while it is being written", key, n.name)
		}
		children[key] = child
		if childOwn != nil {
			items, err := g.reopenTree(child, inherit(childOwn, opts), childOwn, prefix+key+".", path+key+".")
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
	self := reopenItem{node: n, state: state, opts: opts, own: own, children: children, writers: writers}
	return append([]reopenItem{self}, below...), nil
}

// reopenNodes prepares every item, then commits all or aborts all. This
// is the one path for blockdev-reopen and for internal reopens (a writer
// arriving at an auto-read-only node). g.mu must be held.
func (g *Graph) reopenNodes(items []reopenItem) error {
	// Nodes losing write access are flushed while they still have it.
	for _, it := range items {
		n := it.node
		if n.state.writable(n.writers.Load()) && !it.state.writable(it.writers) {
			if err := n.Flush(); err != nil {
				return err
			}
		}
	}
	pendings := make([]Pending, len(items))
	abort := func() {
		for _, p := range pendings {
			if p != nil {
				p.Abort()
			}
		}
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
			Writable: it.state.writable(it.writers), Direct: it.state.direct, NoFlush: it.state.noFlush,
			Options: driverOpts, Files: g.files,
		})
		if err != nil {
			abort()
			return err
		}
		pendings[i] = p
	}
	for i, it := range items {
		n := it.node
		n.mu.Lock()
		if pendings[i] != nil {
			pendings[i].Commit()
		}
		n.state = it.state
		n.opts, n.own = it.opts, it.own
		old := n.children
		n.children = it.children
		n.mu.Unlock()
		for key, c := range old {
			if it.children[key] != c {
				delete(c.parents, n)
				if c.implicit && len(c.parents) == 0 {
					g.remove(c)
				}
			}
		}
		for key, c := range it.children {
			c.parents[n] = key
		}
	}
	return nil
}
