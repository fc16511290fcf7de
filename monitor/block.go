package monitor

import (
	"minivmm/block"
)

// blockdevAdd is blockdev-add: its arguments are the node's options.
func blockdevAdd(c *call, args Args) (any, error) {
	if _, err := c.mon.srv.graph.AddRoot(block.Options(args)); err != nil {
		return nil, err
	}
	return nil, nil
}

func blockdevDel(c *call, args Args) (any, error) {
	name, _ := args.Str("node-name")
	if err := c.mon.srv.jobBusy(name); err != nil {
		return nil, err
	}
	return nil, c.mon.srv.graph.Delete(name)
}

func blockdevReopen(c *call, args Args) (any, error) {
	list := args["options"].([]map[string]any)
	opts := make([]block.Options, len(list))
	for i, o := range list {
		opts[i] = block.Options(o)
	}
	return nil, c.mon.srv.graph.Reopen(opts)
}

// deviceInfo is a node as query-named-block-nodes and query-block's
// "inserted" (blk) show it, members in QEMU's order; flat leaves the
// backing chain out (blockinfo.go).
func deviceInfo(n *block.Node, flat, blk bool) Obj {
	info := n.Info()
	image, depth := imageInfo(n, flat, blk)
	info.BackingDepth = depth
	o := Obj{
		{"iops_rd", 0}, {"detect_zeroes", info.DetectZeroes}, {"image", image},
		{"iops_wr", 0}, {"ro", info.ReadOnly}, {"node-name", info.Name}, {"backing_file_depth", info.BackingDepth},
		{"drv", info.Driver}, {"iops", 0}, {"bps_wr", 0}, {"write_threshold", 0},
	}
	if bms := dirtyBitmapsInfo(n); bms != nil {
		o = append(o, Member{"dirty-bitmaps", bms})
	}
	return append(o, Obj{
		{"encrypted", false}, {"bps", 0}, {"bps_rd", 0},
		{"cache", Obj{{"no-flush", info.NoFlush}, {"direct", info.Direct}, {"writeback", true}}},
		{"file", info.Filename},
	}...)
}

func queryNamedBlockNodes(c *call, args Args) (any, error) {
	nodes := c.mon.srv.graph.Nodes()
	flat, _ := args["flat"].(bool)
	out := make([]any, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, deviceInfo(n, flat, false))
	}
	return out, nil
}

func queryBlock(c *call, _ Args) (any, error) {
	backends := c.mon.srv.graph.Backends()
	out := make([]any, 0, len(backends))
	for _, b := range backends {
		out = append(out, Obj{
			{"device", b.Name()}, {"locked", false}, {"removable", true},
			{"inserted", deviceInfo(skipImplicitFilters(b.Node()), false, true)}, {"type", "unknown"},
		})
	}
	return out, nil
}

// hmpInfoBlock is "info block [-n] [device]": the backends, or with -n or
// a name no backend has, the named nodes, as QEMU's hmp_info_block
// prints them.
func hmpInfoBlock(h *hmpRun, in hmpInput) {
	g := h.srv.graph
	printed := false
	if !in.flags['n'] {
		for i, b := range g.Backends() {
			if in.hasArg && in.arg != b.Name() {
				continue
			}
			if i > 0 {
				h.printf("\n")
			}
			info := b.Node().Info()
			h.printf("%s (%s)", b.Name(), info.Name)
			printBlockNode(h, info, true)
			printed = true
		}
	}
	if !in.hasArg && !in.flags['n'] || printed {
		return
	}
	for i, n := range g.Nodes() {
		info := n.Info()
		if in.hasArg && in.arg != info.Name {
			continue
		}
		if i > 0 { // QEMU counts the nodes it skipped, too
			h.printf("\n")
		}
		h.printf("%s", info.Name)
		printBlockNode(h, info, false)
	}
}

// printBlockNode is print_block_info from the ": file (driver)" on; a
// backend is, as query-block says, removable, unlocked, tray closed.
func printBlockNode(h *hmpRun, info block.Info, backend bool) {
	ro := ""
	if info.ReadOnly {
		ro = ", read-only"
	}
	h.printf(": %s (%s%s)\n", info.Filename, info.Driver, ro)
	if backend {
		h.printf("    Removable device: not locked, tray closed\n")
	}
	cache := "writeback"
	if info.Direct {
		cache += ", direct"
	}
	if info.NoFlush {
		cache += ", ignore flushes"
	}
	h.printf("    Cache mode:       %s\n", cache)
	if info.DetectZeroes != "off" && info.DetectZeroes != "" {
		h.printf("    Detect zeroes:    %s\n", info.DetectZeroes)
	}
}
