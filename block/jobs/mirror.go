package jobs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"minivmm/block"
	"minivmm/block/engine"
	"minivmm/block/filter"
)

// Mirror is blockdev-mirror and active block-commit (QEMU's mirror job,
// and commit_active_start's use of it): the engine copies Source into
// Target and keeps copying what the guest writes; the job is ready once
// they hold the same. block-job-complete then moves every user of
// Source onto Target, with Source held still from the last check that
// nothing is left to copy until the switch is made. A cancel of a ready
// job that is not forced ends it without the switch, Target a
// point-in-time copy (BLOCK_JOB_COMPLETED, as QEMU).
type Mirror struct {
	Graph          *block.Graph
	Source, Target *block.Node
	Sync           engine.MirrorSync
	// Base: active commit, Target is Source's base; only what the
	// layers above it allocate is copied at first, Target may be grown
	// to Source's length, and the sizes need not match.
	Base        *block.Node
	Granularity int64
	BufSize     int64
	// OnSourceError, OnTargetError: QEMU's BlockdevOnError for reads of
	// Source and writes to Target ("" is report).
	OnSourceError, OnTargetError string
	// BaseWasRO: Base was reopened read-write for the job (by the
	// caller, before it started); it goes back to read-only unless the
	// job ends with the switch.
	BaseWasRO bool
	// TargetUser names a backend reading Target ("?" for an unnamed
	// one): the job cannot start, as in QEMU, whose mirror target
	// does not share consistent reads.
	TargetUser string
	// Filter: put QEMU's mirror_top filter node above Source while the
	// job runs, named FilterName ("": a generated name); Source's
	// backends and parents use it, and the switch moves them from it.
	Filter     bool
	FilterName string

	filter *block.Node

	mu       sync.Mutex
	eng      *engine.Mirror
	hold     *block.Backend // the job's write permission on Target
	release  func()         // ends the hold on Source
	complete atomic.Bool
	pivoted  bool
}

// Setup takes write permission on Target for the copy.
func (d *Mirror) Setup(j *Job) error {
	if d.TargetUser != "" {
		user := "an unnamed block device"
		if d.TargetUser != "?" {
			user = "block device '" + d.TargetUser + "'"
		}
		n := d.Target.Name()
		return fmt.Errorf("Permission conflict on node '%s': permissions 'consistent read' are both required by %s (uses node '%s' as 'root' child) and unshared by an unnamed block device (uses node '%s' as 'root' child).", n, user, n, n)
	}
	hold, err := d.Graph.Attach("", d.Target, block.Perm{Write: true, ShareWrite: true})
	if err != nil {
		return err
	}
	d.hold = hold
	if d.Filter {
		f, err := d.Graph.InsertFilter(d.Source, filter.MirrorTop, d.FilterName, nil)
		if err != nil {
			d.Graph.Detach(hold)
			d.hold = nil
			return err
		}
		d.filter = f
		j.AddNode(f.Name()) // the job's own node in QEMU: busy
	}
	return nil
}

// top is what the guest uses: the filter, or Source without one.
func (d *Mirror) top() *block.Node {
	if d.filter != nil {
		return d.filter
	}
	return d.Source
}

// Run copies until converged and, once complete (or a soft cancel) is
// asked, returns with Source held.
func (d *Mirror) Run(ctx context.Context, j *Job) error {
	if d.Base == nil && d.Source.Length() != d.Target.Length() {
		return errors.New("Source and target image have different sizes")
	}
	if d.Base != nil && d.Target.Length() < d.Source.Length() {
		if err := d.Target.Truncate(d.Source.Length()); err != nil {
			return err
		}
	}
	o := engine.MirrorOptions{
		Options: engine.Options{Limiter: j, Progress: j.Progress},
		Sync:    d.Sync, Base: d.Base, Granularity: d.Granularity, BufSize: d.BufSize,
		Ready: j.Ready,
		Stop:  func() bool { return d.complete.Load() || j.CancelRequested() },
		Hold: func() func() {
			return j.SelfDrain(func() func() { return d.Graph.Hold(d.top()) })
		},
		// Holding the filter leaves the source below it readable.
		CopyUnderHold: d.filter != nil,
		PausePoint:    j.PausePoint,
		OnError: func(source bool, err error) error {
			policy, op := d.OnTargetError, "write"
			if source {
				policy, op = d.OnSourceError, "read"
			}
			if policy == "" {
				policy = "report"
			}
			if j.ErrorWith(policy, op, err) == "report" {
				return err
			}
			return nil
		},
	}
	eng, err := engine.NewMirror(d.Source, d.Target, o)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.eng = eng
	d.mu.Unlock()
	release, err := eng.Run(ctx)
	if err != nil {
		return err
	}
	if !d.complete.Load() {
		// A soft cancel of a ready job: no switch, nothing to hold.
		release()
		return nil
	}
	d.mu.Lock()
	d.release = release
	d.mu.Unlock()
	return nil
}

// Complete asks for the switch (block-job-complete).
func (d *Mirror) Complete(j *Job) error {
	d.complete.Store(true)
	d.kick()
	return nil
}

// Cancel: a soft cancel of a ready mirror ends it without the switch;
// before ready, every cancel is forced (QEMU's mirror_cancel).
func (d *Mirror) Cancel(j *Job, force bool) bool {
	d.kick()
	s := j.Status()
	return force || s != Ready && s != Standby
}

func (d *Mirror) kick() {
	d.mu.Lock()
	eng := d.eng
	d.mu.Unlock()
	if eng != nil {
		eng.Kick()
	}
}

// Prepare makes the switch, if complete was asked.
func (d *Mirror) Prepare(j *Job) error {
	d.mu.Lock()
	release := d.release
	d.mu.Unlock()
	if release == nil {
		return nil
	}
	// The guest's backend takes the job's write permission on Target
	// over, so that Target's files stay open read-write throughout.
	if err := d.Graph.Replace(d.top(), d.Target, d.hold); err != nil {
		return err
	}
	d.pivoted = true
	return nil
}

func (d *Mirror) Commit(*Job) {}
func (d *Mirror) Abort(*Job)  {}

// Clean lets Source go, drops the bitmap and the job's write access, and
// puts a base reopened for the job back to read-only unless it is now
// the active layer.
func (d *Mirror) Clean(*Job) {
	d.mu.Lock()
	release, eng := d.release, d.eng
	d.release, d.eng = nil, nil
	d.mu.Unlock()
	if release != nil {
		release()
	}
	if d.filter != nil {
		// Its users went to Target with the switch; otherwise they go
		// back to Source.
		d.Graph.RemoveFilter(d.filter)
		d.filter = nil
	}
	if eng != nil {
		eng.Close()
	}
	if d.hold != nil {
		d.Graph.Detach(d.hold)
		d.hold = nil
	}
	if d.Base != nil && d.BaseWasRO && !d.pivoted {
		d.Graph.SetReadOnly(d.Base, true)
	}
}
