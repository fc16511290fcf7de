package monitor

import (
	"minivmm/block"
	"minivmm/block/engine"
	"minivmm/block/jobs"
)

// blockdev-mirror, with QEMU 7.2's arguments, checks in its order and
// its texts. The job (block/jobs/mirror.go) puts QEMU's mirror_top
// filter node above the source (named filter-node-name, or #blockNNN)
// and tracks the writes that reach the source with a dirty bitmap.

var (
	tMirrorSyncMode = enum("MirrorSyncMode", "top", "full", "none", "incremental", "bitmap")
	tBlockdevMirror = object("blockdev-mirror",
		opt("job-id", tStr), req("device", tStr), req("target", tStr),
		req("sync", tMirrorSyncMode), opt("speed", tInt), opt("granularity", tInt),
		opt("buf-size", tInt), opt("on-source-error", tBlockdevOnError),
		opt("on-target-error", tBlockdevOnError), opt("filter-node-name", tStr),
		opt("auto-finalize", tBool), opt("auto-dismiss", tBool))
)

func blockdevMirror(c *call, a Args) (any, error) {
	srv := c.mon.srv
	g := srv.graph
	device, _ := a.Str("device")
	bs, devName, found := rootNode(g, device)
	if !found {
		return nil, genericError("Cannot find device='%s' nor node-name='%s'", device, device)
	}
	// A job's nodes are its children in QEMU (block_job_add_bdrv): not
	// roots any more.
	if _, busy := srv.jobs.Busy(bs.Name()); busy || !bs.IsRoot() {
		return nil, genericError("Need a root block node")
	}
	targetName, _ := a.Str("target")
	target, ok := g.Node(targetName)
	if !ok {
		if b, isBackend := g.Backend(targetName); isBackend {
			target = b.Node()
		} else {
			return nil, genericError("Cannot find device='%s' nor node-name='%s'", targetName, targetName)
		}
	}
	if err := srv.mirrorBusy(target); err != nil {
		return nil, err
	}
	syncName, _ := a.Str("sync")
	if syncName == "top" && bs.Child("backing") == nil {
		syncName = "full"
	}
	granularity, hasGranularity := a.Int("granularity")
	if hasGranularity && granularity != 0 {
		if granularity < 512 || granularity > 64<<20 {
			return nil, genericError("Parameter 'granularity' expects a value in range [512B, 64MB]")
		}
		if granularity&(granularity-1) != 0 {
			return nil, genericError("Parameter 'granularity' expects a power of 2")
		}
	}
	var sync engine.MirrorSync
	switch syncName {
	case "full":
		sync = engine.SyncFull
	case "top":
		sync = engine.SyncTop
	case "none":
		sync = engine.SyncNone
	default:
		return nil, genericError("Sync mode '%s' not supported", syncName)
	}
	bufSize, _ := a.Int("buf-size")
	if bufSize < 0 {
		return nil, genericError("Invalid parameter 'buf-size'")
	}
	if bs == target {
		return nil, genericError("Can't mirror node into itself")
	}
	if err := checkFilterName(g, a); err != nil {
		return nil, err
	}
	d := &jobs.Mirror{Graph: g, Source: bs, Target: target, Sync: sync,
		Granularity: mirrorGranularity(target, granularity), BufSize: bufSize,
		TargetUser: targetUser(g, target), Filter: true}
	d.FilterName, _ = a.Str("filter-node-name")
	d.OnSourceError, _ = a.Str("on-source-error")
	d.OnTargetError, _ = a.Str("on-target-error")
	spec := jobSpec(a, "mirror", devName)
	spec.Device = device
	spec.Nodes = []string{bs.Name(), target.Name()}
	_, err := srv.jobs.Start(spec, d)
	return nil, err
}

// checkFilterName refuses a filter-node-name QEMU could not give the
// filter node a job makes, before the job exists.
func checkFilterName(g *block.Graph, a Args) error {
	if name, ok := a.Str("filter-node-name"); ok {
		if err := g.CheckNewNodeName(name); err != nil {
			return genericError("%s", err)
		}
	}
	return nil
}

// mirrorGranularity is the dirty bitmap's granularity: as given, or as
// QEMU's bdrv_get_default_bitmap_granularity picks it, the target's
// cluster size clamped to [4 KiB, 64 KiB] (64 KiB for a target without
// clusters).
func mirrorGranularity(target *block.Node, given int64) int64 {
	if given != 0 {
		return given
	}
	if cs, ok := target.Image().(interface{ ClusterSize() int64 }); ok {
		return min(max(cs.ClusterSize(), 4<<10), 64<<10)
	}
	return 64 << 10
}

// targetUser names a backend that uses the target, as QEMU's permission
// conflict does ("" for none).
func targetUser(g *block.Graph, target *block.Node) string {
	for _, b := range g.Backends() {
		if b.Node() == target {
			return b.Name()
		}
	}
	if target.InUse() {
		return "?"
	}
	return ""
}

// mirrorBusy refuses a source or target a job already holds, in QEMU's
// words (its op blockers).
func (s *Server) mirrorBusy(nodes ...*block.Node) error {
	for _, n := range nodes {
		if j, ok := s.jobs.Busy(n.Name()); ok {
			return genericError("Node '%s' is busy: block device is in use by block job: %s", deviceOrNodeName(s.graph, n), j.Type())
		}
	}
	return nil
}

// deviceOrNodeName is QEMU's bdrv_get_device_or_node_name: the name of
// the backend n serves, or else n's node name.
func deviceOrNodeName(g *block.Graph, n *block.Node) string {
	for _, b := range g.Backends() {
		if b.Node() == n && b.Name() != "" {
			return b.Name()
		}
	}
	return n.Name()
}

// snapshot runs snapshot actions unless one names a node a job holds:
// QEMU's op blocker refuses it (a mirror would go on copying the old top
// while the guest writes the overlay). As QEMU's transaction, it first
// drains everything once (bdrv_drain_all), and refuses a busy node from
// inside a drained section over it (the action's prepare): a job on the
// node pauses twice (JOB_STATUS_CHANGE paused/standby and back) before
// the refusal.
func (s *Server) snapshot(actions []block.SnapshotAction) error {
	s.graph.Drain()()
	for _, a := range actions {
		name := a.Node
		if a.Sync != nil {
			name = a.Sync.Device
			if name == "" {
				name = a.Sync.NodeName
			}
		}
		n, found := s.graph.Node(name)
		if b, ok := s.graph.Backend(name); ok {
			n, found = b.Node(), true
		}
		if !found {
			continue
		}
		if j, busy := s.jobs.Busy(n.Name()); busy {
			n.Drain()()
			return genericError("Node '%s' is busy: block device is in use by block job: %s", name, j.Type())
		}
	}
	return s.graph.Snapshot(actions)
}
