package block

// Warning is a failure a driver reports and carries on after, as QEMU's
// drivers print such messages on stderr and go on ("qcow2_free_clusters
// failed: Input/output error": the clusters merely leak).
type Warning struct {
	Node string
	Msg  string // what failed, in QEMU's words
	Err  error  // why; nil for a message of its own (a repair's check)
}

// OnWarning sets who hears of warnings from any node (the tools print
// them).
func (g *Graph) OnWarning(f func(Warning)) { g.onWarning.Store(&f) }

// ReportWarning passes w to the listener, if any.
func (g *Graph) ReportWarning(w Warning) {
	if f := g.onWarning.Load(); f != nil {
		(*f)(w)
	}
}

// ReportWarning is the function a driver opening this node reports its
// warnings with.
func (o *OpenContext) ReportWarning() func(msg string, err error) {
	g, node := o.g, o.NodeName
	return func(msg string, err error) {
		g.ReportWarning(Warning{Node: node, Msg: msg, Err: err})
	}
}
