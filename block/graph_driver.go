package block

import "fmt"

// AddDriver makes d available to this graph's nodes only, beside the
// drivers registered process-wide. It is how a test puts a driver that
// closes over its own state (block/faultdisk) into a graph without a
// package-level variable, and without leaving it registered for other
// graphs or tests. A name already in use, here or process-wide, is
// refused: a graph driver never shadows a real one.
func (g *Graph) AddDriver(d *Driver) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, dup := g.lookupDriver(d.Name); dup {
		return fmt.Errorf("block: driver %q already exists", d.Name)
	}
	if g.drivers == nil {
		g.drivers = map[string]*Driver{}
	}
	g.drivers[d.Name] = d
	return nil
}

// lookupDriver finds a driver of this graph, or one registered
// process-wide. g.mu is held.
func (g *Graph) lookupDriver(name string) (*Driver, bool) {
	if d, ok := g.drivers[name]; ok {
		return d, true
	}
	return LookupDriver(name)
}

// LookupDriver finds a driver this graph can open: its own (AddDriver),
// or one registered process-wide.
func (g *Graph) LookupDriver(name string) (*Driver, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lookupDriver(name)
}
