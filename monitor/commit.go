package monitor

import (
	"minivmm/block"
	"minivmm/block/jobs"
)

// block-commit, with QEMU 7.2's arguments, checks in its order and its
// texts. An intermediate top runs the commit job here; the active layer
// is active commit's (activecommit.go).

var tBlockCommit = object("block-commit",
	opt("job-id", tStr), req("device", tStr), opt("base-node", tStr), opt("base", tStr),
	opt("top-node", tStr), opt("top", tStr), opt("backing-file", tStr), opt("speed", tInt),
	opt("on-error", tBlockdevOnError), opt("filter-node-name", tStr),
	opt("auto-finalize", tBool), opt("auto-dismiss", tBool))

// rootNode finds a job's device by backend name or node name, and the
// backend name a job id defaults to ("" for a node without one).
func rootNode(g *block.Graph, device string) (n *block.Node, backend string, found bool) {
	if b, ok := g.Backend(device); ok {
		return b.Node(), device, true
	}
	if n, ok := g.Node(device); ok {
		return n, "", true
	}
	return nil, "", false
}

// chainContains: x is top or in its backing chain.
func chainContains(top, x *block.Node) bool {
	for n := top; n != nil; n = n.Child("backing") {
		if n == x {
			return true
		}
	}
	return false
}

// findBackingImage is QEMU's bdrv_find_backing_image: the image below
// top whose name (as the layer above records it, or its own filename)
// is name.
func findBackingImage(top *block.Node, name string) *block.Node {
	for n := top; n != nil; n = n.Child("backing") {
		b := n.Child("backing")
		if b != nil && (n.BackingName() == name || b.Filename() == name) {
			return b
		}
	}
	return nil
}

// chainNames are the names of the nodes from top down to base, both
// included (base may be nil: to the bottom).
func chainNames(top, base *block.Node) []string {
	var out []string
	for n := top; n != nil; n = n.Child("backing") {
		out = append(out, n.Name())
		if n == base {
			break
		}
	}
	return out
}

func blockCommit(c *call, a Args) (any, error) {
	srv := c.mon.srv
	g := srv.graph
	device, _ := a.Str("device")
	bs, devName, found := rootNode(g, device)
	if !found {
		// libvirt probes for the command with this class: it comes first.
		return nil, &Error{Class: DeviceNotFound, Desc: "Device '" + device + "' not found"}
	}
	// A node a job holds is that job's child in QEMU (block_job_add_bdrv,
	// or the job's filter above it): not a root any more.
	if _, busy := srv.jobs.Busy(bs.Name()); busy || !bs.IsRoot() {
		return nil, genericError("Need a root block node")
	}
	top := bs
	topNode, hasTopNode := a.Str("top-node")
	topName, hasTop := a.Str("top")
	switch {
	case hasTopNode && hasTop:
		return nil, genericError("'top-node' and 'top' are mutually exclusive")
	case hasTopNode:
		n, ok := g.Node(topNode)
		if !ok {
			return nil, genericError("Cannot find device='' nor node-name='%s'", topNode)
		}
		if !chainContains(bs, n) {
			return nil, genericError("'%s' is not in this backing file chain", topNode)
		}
		top = n
	case hasTop && bs.Filename() != topName:
		if top = findBackingImage(bs, topName); top == nil {
			return nil, genericError("Top image file %s not found", topName)
		}
	}
	var base *block.Node
	baseNode, hasBaseNode := a.Str("base-node")
	baseName, hasBase := a.Str("base")
	switch {
	case hasBaseNode && hasBase:
		return nil, genericError("'base-node' and 'base' are mutually exclusive")
	case hasBaseNode:
		n, ok := g.Node(baseNode)
		if !ok {
			return nil, genericError("Cannot find device='' nor node-name='%s'", baseNode)
		}
		if !chainContains(top, n) {
			return nil, genericError("'%s' is not in this backing file chain", baseNode)
		}
		base = n
	case hasBase:
		if base = findBackingImage(top, baseName); base == nil {
			return nil, genericError("Can't find '%s' in the backing chain", baseName)
		}
	default:
		for base = top; base.Child("backing") != nil; base = base.Child("backing") {
		}
	}
	if top == base {
		return nil, genericError("cannot commit an image into itself")
	}
	backingFile, hasBackingFile := a.Str("backing-file")
	if top == bs {
		if hasBackingFile {
			return nil, genericError("'backing-file' specified, but 'top' is the active layer")
		}
		return startActiveCommit(c, a, devName, bs, base)
	}
	if err := checkFilterName(g, a); err != nil {
		return nil, err
	}
	spec := jobSpec(a, "commit", devName)
	spec.Device = device
	spec.Nodes = append([]string{bs.Name()}, chainNames(top, base)...)
	// QEMU's commit_top filter sits above top while the job runs: the
	// overlay's backing link goes through it.
	filterName, _ := a.Str("filter-node-name")
	_, err := srv.jobs.Start(spec, &jobs.Commit{Graph: g, Top: top, Base: base, BackingFile: backingFile,
		Filter: true, FilterName: filterName})
	return nil, err
}
