package monitor

import (
	"minivmm/block"
	"minivmm/block/jobs"
)

// block-stream, with QEMU 7.2's arguments, checks in its order and its
// texts.

var tBlockStream = object("block-stream",
	opt("job-id", tStr), req("device", tStr), opt("base", tStr), opt("base-node", tStr),
	opt("backing-file", tStr), opt("bottom", tStr), opt("speed", tInt),
	opt("on-error", tBlockdevOnError), opt("filter-node-name", tStr),
	opt("auto-finalize", tBool), opt("auto-dismiss", tBool))

func blockStream(c *call, a Args) (any, error) {
	srv := c.mon.srv
	g := srv.graph
	device, _ := a.Str("device")
	bs, devName, found := rootNode(g, device)
	if !found {
		return nil, genericError("Cannot find device='%s' nor node-name='%s'", device, device)
	}
	baseName, hasBase := a.Str("base")
	baseNode, hasBaseNode := a.Str("base-node")
	bottomName, hasBottom := a.Str("bottom")
	switch {
	case hasBase && hasBaseNode:
		return nil, genericError("'base' and 'base-node' cannot be specified at the same time")
	case hasBase && hasBottom:
		return nil, genericError("'base' and 'bottom' cannot be specified at the same time")
	case hasBaseNode && hasBottom:
		return nil, genericError("'base-node' and 'bottom' cannot be specified at the same time")
	}
	var base *block.Node
	switch {
	case hasBase:
		if base = findBackingImage(bs, baseName); base == nil {
			return nil, genericError("Can't find '%s' in the backing chain", baseName)
		}
	case hasBaseNode:
		n, ok := g.Node(baseNode)
		if !ok {
			return nil, genericError("Cannot find device='' nor node-name='%s'", baseNode)
		}
		if n == bs || !chainContains(bs, n) {
			return nil, genericError("Node '%s' is not a backing image of '%s'", baseNode, device)
		}
		base = n
	case hasBottom:
		n, ok := g.Node(bottomName)
		if !ok {
			return nil, genericError("Cannot find device='' nor node-name='%s'", bottomName)
		}
		if n == bs || !chainContains(bs, n) {
			return nil, genericError("Node '%s' is not part of the backing chain of '%s'", bottomName, device)
		}
		base = n.Child("backing")
	}
	// QEMU's op blockers over the chain streamed, base excluded.
	for n := bs; n != nil && n != base; n = n.Child("backing") {
		if err := srv.mirrorBusy(n); err != nil {
			return nil, err
		}
	}
	backingFile, hasBackingFile := a.Str("backing-file")
	if base == nil && hasBackingFile {
		return nil, genericError("backing file specified, but streaming the entire chain")
	}
	if err := checkFilterName(g, a); err != nil {
		// QEMU's stream_start words it through bdrv_insert_node.
		return nil, genericError("Could not create node: %s", err.(*Error).Desc)
	}
	spec := jobSpec(a, "stream", devName)
	spec.Device = device
	spec.Nodes = chainNames(bs, base)
	if base != nil {
		spec.Nodes = spec.Nodes[:len(spec.Nodes)-1] // base is only read
	}
	// QEMU's copy-on-read filter sits above the top while the job runs:
	// the top's users move onto it.
	filterName, _ := a.Str("filter-node-name")
	_, err := srv.jobs.Start(spec, &jobs.Stream{Graph: g, Top: bs, Base: base, BackingFile: backingFile,
		Filter: true, FilterName: filterName})
	return nil, err
}
