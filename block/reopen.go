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
	opts     Options
	children map[string]*Node
	writers  int32 // the writer count the new state is for
}

// Reopen reopens a list of nodes as one transaction (blockdev-reopen):
// every node is prepared (new fds opened) before any is committed, and if
// one fails, all are aborted and nothing observable has changed. Options
// not given take their defaults, as in QEMU (a format's "file" must be
// named again; a "backing" not given stays).
func (g *Graph) Reopen(list []Options) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	items := make([]reopenItem, 0, len(list))
	for i, o := range list {
		it, err := g.reopenItemFor(o, fmt.Sprintf("options[%d].", i))
		if err != nil {
			return err
		}
		if slices.ContainsFunc(items, func(x reopenItem) bool { return x.node == it.node }) {
			return fmt.Errorf("Node '%s' is listed twice", it.node.name)
		}
		items = append(items, it)
	}
	return g.reopenNodes(items)
}

// reopenItemFor checks one entry of blockdev-reopen's list; prefix
// ("options[0].") names it in QAPI's messages.
func (g *Graph) reopenItemFor(o Options, prefix string) (reopenItem, error) {
	name, err := o.String("node-name", "")
	if err != nil {
		return reopenItem{}, err
	}
	if name == "" {
		return reopenItem{}, fmt.Errorf("node-name not specified")
	}
	n := g.nodes[name]
	if n == nil {
		return reopenItem{}, fmt.Errorf("Failed to find node with node-name='%s'", name)
	}
	if drv, _ := o.String("driver", ""); drv != n.drv.Name {
		return reopenItem{}, fmt.Errorf("Cannot change the option 'driver'")
	}
	schema := maps.Clone(genericOptions)
	maps.Copy(schema, n.drv.Options)
	if n.drv.Format {
		schema["file"] = OptChild
	}
	if err := checkKeys(o, schema, prefix); err != nil {
		return reopenItem{}, err
	}
	if _, given := o["discard"]; !given && n.state.discard == "unmap" {
		// QEMU's one exception to "omitted means default": discard=unmap
		// stays once set.
		o = o.Clone()
		o["discard"] = "unmap"
	}
	state, err := parseState(o)
	if err != nil {
		return reopenItem{}, err
	}
	for _, k := range slices.Sorted(maps.Keys(n.drv.Options)) {
		if n.drv.Options[k] == OptChild {
			continue
		}
		was, _ := n.opts.get(k, n.drv.Options[k])
		now, _ := o.get(k, n.drv.Options[k])
		switch {
		case reflect.DeepEqual(was, now):
		case now == nil:
			return reopenItem{}, fmt.Errorf("Option '%s' cannot be reset to its default value", k)
		default:
			return reopenItem{}, fmt.Errorf("Cannot change the option '%s'", k)
		}
	}
	children := maps.Clone(n.children)
	for _, key := range slices.Sorted(maps.Keys(schema)) {
		if schema[key] != OptChild {
			continue
		}
		v, given := o[key]
		if !given {
			if key == "file" {
				return reopenItem{}, fmt.Errorf("Parameter '%s%s' is missing", prefix, key)
			}
			continue
		}
		ref, _ := convert(v, OptChild, key)
		refName, isRef := ref.(string)
		if !isRef {
			return reopenItem{}, fmt.Errorf("Cannot change the option '%s': give a node-name, not new options", key)
		}
		c := g.nodes[refName]
		if c == nil {
			return reopenItem{}, fmt.Errorf("Cannot find device='' nor node-name='%s'", refName)
		}
		if c != n.children[key] && n.writers.Load() > 0 {
			return reopenItem{}, fmt.Errorf("Cannot change the '%s' child of node '%s' while it is being written", key, name)
		}
		children[key] = c
	}
	writers := n.writers.Load()
	if writers > 0 && state.readOnly {
		return reopenItem{}, fmt.Errorf("Cannot make node '%s' read-only: it is in use for writing", name)
	}
	return reopenItem{node: n, state: state, opts: o, children: children, writers: writers}, nil
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
		n.opts = it.opts
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
