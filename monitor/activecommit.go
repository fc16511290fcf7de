package monitor

import (
	"minivmm/block"
	"minivmm/block/engine"
	"minivmm/block/jobs"
)

// startActiveCommit runs block-commit whose top is the active layer
// (bs): QEMU's commit_active_start, a mirror of bs into base that ends,
// on block-job-complete, with bs's users moved onto base, which stays
// read-write. a are the command's checked arguments, devName the backend
// name a job id defaults to.
//
// As in QEMU, base is reopened read-write before the job exists: a base
// whose fdset holds no O_RDWR fd fails the command with no job created
// and no byte moved. It goes back to read-only if the job ends without
// the switch (cancelled, failed), where QEMU 7.2 leaves it read-write.
func startActiveCommit(c *call, a Args, devName string, bs, base *block.Node) (any, error) {
	srv := c.mon.srv
	g := srv.graph
	if err := srv.mirrorBusy(bs, base); err != nil {
		return nil, err
	}
	if err := checkFilterName(g, a); err != nil {
		return nil, err
	}
	baseWasRO := base.ReadOnly()
	if err := g.SetReadOnly(base, false); err != nil {
		return nil, err
	}
	d := &jobs.Mirror{Graph: g, Source: bs, Target: base, Sync: engine.SyncFull, Base: base,
		Granularity: mirrorGranularity(base, 0), BaseWasRO: baseWasRO, Filter: true}
	d.FilterName, _ = a.Str("filter-node-name")
	d.OnSourceError, _ = a.Str("on-error")
	d.OnTargetError = d.OnSourceError
	spec := jobSpec(a, "commit", devName)
	device, _ := a.Str("device")
	spec.Device = device
	spec.Nodes = chainNames(bs, base)
	if _, err := srv.jobs.Start(spec, d); err != nil {
		if baseWasRO {
			g.SetReadOnly(base, true)
		}
		return nil, err
	}
	return nil, nil
}
