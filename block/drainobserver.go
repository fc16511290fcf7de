package block

// DrainObserver is told of every drained section: the names of the nodes
// it quiesces (the drained nodes and all their ancestors), before any of
// them is quiesced; the end it returns is called once the section has
// ended. It is how users of nodes that are not nodes themselves (block
// jobs) stop for a drain, as QEMU's drained_begin/drained_end reach a
// job through its BdrvChild on each of its nodes. It must not block on
// requests to the graph, nor take the graph's lock: a drain may begin
// with that lock held.
type DrainObserver func(nodes []string) (end func())

// ObserveDrains sets the graph's DrainObserver (nil: none).
func (g *Graph) ObserveDrains(f DrainObserver) {
	if f == nil {
		g.onDrain.Store(nil)
		return
	}
	g.onDrain.Store(&f)
}

// observeDrain tells the observer, if any, of a drained section over
// nodes, and returns what ends it for the observer.
func observeDrain(nodes []*Node) (end func()) {
	if len(nodes) == 0 {
		return func() {}
	}
	f := nodes[0].g.onDrain.Load()
	if f == nil {
		return func() {}
	}
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.name
	}
	if end := (*f)(names); end != nil {
		return end
	}
	return func() {}
}
