package jobs

import (
	"minivmm/block"
	"minivmm/block/engine"
	"minivmm/block/qcow2"
)

// Err is why the job failed (unix.ECANCELED once cancelled), nil while
// it has not.
func (j *Job) Err() error {
	j.m.mu.Lock()
	defer j.m.mu.Unlock()
	return j.err
}

// engineOptions are what a block job's copy engine gets: the job's rate
// limit and pause points, its progress (and the caller's), and its
// on-error policy.
func (j *Job) engineOptions(progress func(done, total int64)) engine.Options {
	return engine.Options{
		Limiter: j,
		Progress: func(done, total int64) {
			j.Progress(done, total)
			if progress != nil {
				progress(done, total)
			}
		},
		Retry: func(e *engine.Error) bool {
			op := "write"
			if e.Op == engine.OpRead || e.Op == engine.OpStatus {
				op = "read"
			}
			return j.Error(op, e.Err) != "report"
		},
	}
}

// relink makes backing the backing file of overlay, in its header (named
// name, or backing's filename; none when backing is nil) and in the
// graph, with overlay drained: QEMU's bdrv_drop_intermediate. The header
// goes first: the data it now points past is already in backing (flushed
// by the engine), so a crash at any point leaves a chain that reads the
// same.
func relink(g *block.Graph, overlay, backing *block.Node, name string) error {
	end := overlay.Drain()
	defer end()
	// The header is written through the overlay's file, which needs a
	// writer: the guest's, or the job's own for the while; a read-only
	// overlay (an intermediate image) is read-write just for that. (QEMU
	// 7.2 tries the same over an fdset and aborts on its own image lock.)
	if overlay.ReadOnly() {
		if err := g.SetReadOnly(overlay, false); err != nil {
			return err
		}
		defer g.SetReadOnly(overlay, true)
	}
	if overlay.Writers() == 0 {
		hold, err := g.Attach("", overlay, block.Perm{Write: true})
		if err != nil {
			return err
		}
		defer g.Detach(hold)
	}
	format := ""
	if backing != nil {
		if name == "" {
			name = backing.Filename()
		}
		format = backing.Driver()
	} else {
		name = ""
	}
	if overlay.Driver() == "qcow2" {
		if err := qcow2.SetBacking(overlay, name, format); err != nil {
			return err
		}
	}
	return g.SetBackingChild(overlay, backing)
}
