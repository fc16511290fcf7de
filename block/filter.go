package block

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// A block job's filter node (QEMU's commit_top above an intermediate
// commit's top): opened over a node, it takes that node's place as the
// child of each of its parents while the job runs, and goes at the end.
// The parents switch in one transactional reopen, under drain, as a
// snapshot's overlay takes an old top's place (withChild, reopenNodes).

// InsertFilter opens a node of driver drv (a filter whose one child is
// "backing", or "file" for a format-shaped one), named name ("": a
// generated #blockNNN name) with the driver's options opts, over n, and
// makes it the child of every node that had n as a child and the node of
// every backend that used n, with n held still meanwhile (Hold). A backend's write permission
// stays counted on n, which its writes still reach. On error nothing
// has changed.
func (g *Graph) InsertFilter(n *Node, drv, name string, opts Options) (*Node, error) {
	// The filter is opened before the hold (a held node takes no new
	// parent: see the lock order in pivot.go); with nothing using it
	// yet, it is idle until its parents and backends move onto it.
	f, err := g.addFilter(n, drv, name, opts)
	if err != nil {
		return nil, err
	}
	release := g.Hold(n)
	defer release()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.nodes[f.name] != f {
		return nil, fmt.Errorf("Cannot find device='%s' nor node-name='%s'", f.name, f.name)
	}
	if err := g.moveParents(n, f); err != nil {
		g.remove(f)
		g.releasePerms()
		return nil, err
	}
	g.moveUsers(n, f)
	g.releasePerms()
	return f, nil
}

// addFilter opens InsertFilter's node over n, used by nothing yet.
func (g *Graph) addFilter(n *Node, drv, name string, opts Options) (*Node, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	key := "backing"
	if d, ok := g.lookupDriver(drv); ok && d.Format {
		key = "file"
	}
	o := Options{"driver": drv, key: n.name, "read-only": n.state.readOnly}
	for k, v := range opts {
		o[k] = v
	}
	if name != "" {
		o["node-name"] = name
	}
	if _, err := g.checkOptions(o, ""); err != nil {
		return nil, err
	}
	f, err := g.add(o, nil, false)
	if err != nil {
		return nil, err
	}
	f.filter = true
	return f, nil
}

// RemoveFilter takes a filter InsertFilter made out of the graph: its
// parents and backends take its child back, and it is closed.
func (g *Graph) RemoveFilter(f *Node) error {
	g.mu.Lock()
	child := f.children["backing"]
	if child == nil {
		child = f.children["file"]
	}
	gone := g.nodes[f.name] != f
	g.mu.Unlock()
	if gone || child == nil {
		return nil
	}
	release := g.Hold(f)
	defer release()
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.moveParents(f, child); err != nil {
		return err
	}
	g.moveUsers(f, child)
	g.remove(f)
	// A mirror's switch (Replace of the filter) moved a -drive's backend
	// away from the node only it kept open: that node goes now, as
	// Replace closes it without a filter in between.
	if len(child.users) == 0 && len(child.parents) == 0 {
		for _, b := range g.backends {
			if b.owns == child {
				b.owns = nil
				g.remove(child)
				break
			}
		}
	}
	g.releasePerms()
	return nil
}

// moveUsers moves every backend of from onto to, where one is the
// filter over the other: the write permissions stay counted where they
// were on the filtered node, and the filter counts its own. g.mu held,
// from held (Hold).
func (g *Graph) moveUsers(from, to *Node) {
	users := from.users
	from.users = nil
	for _, b := range users {
		b.node.Store(to)
		if !b.perm.Write {
			continue
		}
		if to.filter { // onto the filter: it counts the writer too
			to.writers.Add(1)
			if b.perm.ShareWrite {
				to.sharedWriters++
			}
		} else { // off it
			from.writers.Add(-1)
			if b.perm.ShareWrite {
				from.sharedWriters--
			}
		}
	}
	to.users = append(to.users, users...)
	slices.SortFunc(to.users, func(a, b *Backend) int { return cmp.Compare(a.seq, b.seq) })
}

// moveParents makes every parent of from (but to) use to as that child,
// in one reopen. g.mu held.
func (g *Graph) moveParents(from, to *Node) error {
	var items []reopenItem
	for _, p := range slices.SortedFunc(maps.Keys(from.parents), func(a, b *Node) int { return strings.Compare(a.name, b.name) }) {
		if p == to {
			continue
		}
		if _, ok := p.img.(Reopener); !ok {
			return fmt.Errorf("Cannot change the option '%s' of node '%s'", from.parents[p], p.name)
		}
		items = append(items, withChild(p, from.parents[p], to))
	}
	if len(items) == 0 {
		return nil
	}
	return g.reopenNodes(items)
}

// IsFilter says whether n is a job's filter node (InsertFilter).
func (n *Node) IsFilter() bool { return n.filter }
