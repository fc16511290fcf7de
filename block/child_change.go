package block

import "fmt"

// ChildChanger is a driver that takes children and lets them go at run
// time (quorum: QEMU's bdrv_add_child and bdrv_del_child, which
// x-blockdev-change calls). The graph drains the node and keeps it
// locked around AddChild and RemoveChild; the checks change nothing.
type ChildChanger interface {
	// NextChildRole is the role a child added now gets ("children.3"),
	// or why none can be added.
	NextChildRole() (string, error)
	AddChild(role string, c *Node)
	// CanRemoveChild says why the child in role cannot go, if it cannot.
	CanRemoveChild(role string) error
	RemoveChild(role string)
}

// AddChild makes the node named child a new child of the node named
// parent, whose driver takes children at run time (QMP's
// x-blockdev-change with "node"). The child must have no parent nor
// user yet. On error nothing changed.
func (g *Graph) AddChild(parent, child string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.nodes[parent]
	if p == nil {
		return fmt.Errorf("Cannot find device='%s' nor node-name='%s'", parent, parent)
	}
	c := g.nodes[child]
	if c == nil {
		return fmt.Errorf("Node '%s' not found", child)
	}
	cc, ok := p.img.(ChildChanger)
	if !ok {
		return fmt.Errorf("The node %s does not support adding a child", parent)
	}
	if len(c.parents) > 0 || len(c.users) > 0 || c == p {
		return fmt.Errorf("The node %s already has a parent", child)
	}
	if c.held {
		return errHeld(child)
	}
	role, err := cc.NextChildRole()
	if err != nil {
		return err
	}
	end := drainNodes(drainOrder([]*Node{p}))
	defer end()
	link := func() {
		p.mu.Lock()
		p.children[role] = c
		p.mu.Unlock()
		g.seq++
		c.parents[p] = role
		c.attached[p] = g.seq
	}
	unlink := func() {
		p.mu.Lock()
		delete(p.children, role)
		p.mu.Unlock()
		delete(c.parents, p)
		delete(c.attached, p)
	}
	link()
	if err := g.refreshPerms(); err != nil {
		unlink()
		return err
	}
	// The parent's writers write through the new child too.
	w := p.writers.Load()
	for i := int32(0); i < w; i++ {
		if err := g.addWriter(c, i < p.sharedWriters); err != nil {
			for j := int32(0); j < i; j++ {
				g.dropWriter(c, j < p.sharedWriters, "")
			}
			unlink()
			g.releasePerms()
			return err
		}
	}
	p.mu.Lock()
	cc.AddChild(role, c)
	p.mu.Unlock()
	g.refreshLimits([]*Node{p})
	return nil
}

// RemoveChild takes the child in role away from the node named parent
// (QMP's x-blockdev-change with "child"). A child created inline goes
// with it; a named one stays in the graph. On error nothing changed.
func (g *Graph) RemoveChild(parent, role string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.nodes[parent]
	if p == nil {
		return fmt.Errorf("Cannot find device='%s' nor node-name='%s'", parent, parent)
	}
	c := p.children[role]
	if c == nil {
		return fmt.Errorf("Node '%s' does not have child '%s'", parent, role)
	}
	cc, ok := p.img.(ChildChanger)
	if !ok {
		return fmt.Errorf("The node %s does not support removing a child", parent)
	}
	if err := cc.CanRemoveChild(role); err != nil {
		return err
	}
	end := drainNodes(drainOrder([]*Node{p}))
	p.mu.Lock()
	cc.RemoveChild(role)
	delete(p.children, role)
	p.mu.Unlock()
	// The child goes whatever its write-back does, as in QEMU: a failure
	// reaches the OnWriteBackError listener (dropWriter, remove).
	w := p.writers.Load()
	for i := int32(0); i < w; i++ {
		g.dropWriter(c, i < p.sharedWriters, "")
	}
	delete(c.parents, p)
	delete(c.attached, p)
	end()
	if c.implicit && len(c.parents) == 0 {
		g.remove(c)
	}
	g.releasePerms()
	g.refreshLimits([]*Node{p})
	return nil
}
