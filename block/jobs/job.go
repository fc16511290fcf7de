// Package jobs is minivmm's background-job framework: QEMU's job.c and
// blockjob.c. A Manager owns a VMM's jobs; a Driver is one job's copy
// loop (commit, stream, mirror), and the optional hooks (Completer,
// Finisher, Canceller) make the graph changes at the job's end. Status
// transitions, verbs, their errors and the events follow QEMU 7.2.
package jobs

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"minivmm/block/engine"
)

// Spec is what a job is started with.
type Spec struct {
	ID     string // the job's id (QMP job-id)
	Device string // unused by QEMU's events (they name the id); kept for callers
	Type   string // QEMU's JobType: commit, stream, mirror, ...
	Speed  int64  // bytes a second, 0 for no limit

	AutoFinalize, AutoDismiss bool

	// OnError is QEMU's BlockdevOnError: report (the default), stop,
	// ignore, enospc, auto.
	OnError string

	// Nodes are the nodes the job holds, its device's first:
	// blockdev-del of any of them fails until the job is dismissed
	// (Manager.Busy).
	Nodes []string
}

// Driver is a job's work: Run returns when it is done, failed or
// cancelled (ctx is cancelled by a forced cancel). It calls the job's
// PausePoint, Limit (or Wait) and Progress as it goes.
type Driver interface {
	Run(ctx context.Context, j *Job) error
}

// Starter is a driver with work to do once the job exists (status
// created) and before it runs, such as commit reopening its base
// read-write. An error is Start's: the job goes to null without running
// (QEMU's job_early_fail), and nothing it would have changed has.
type Starter interface {
	Setup(j *Job) error
}

// Completer is a driver that block-job-complete can end (mirror, active
// commit): Complete is called in status ready.
type Completer interface {
	Complete(j *Job) error
}

// Finisher is a driver with QEMU's .prepare/.commit/.abort/.clean: the
// graph changes at the job's end. Prepare runs after Run succeeded (when
// finalized); its error fails the job. Then Commit (success) or Abort
// (failure or cancel), then Clean in both cases.
type Finisher interface {
	Prepare(j *Job) error
	Commit(j *Job)
	Abort(j *Job)
	Clean(j *Job)
}

// Canceller is a driver with QEMU's .cancel: told of a cancel request, it
// says whether it is a forced one (a mirror in ready completes without
// pivoting on a soft cancel). Without it every cancel is forced.
type Canceller interface {
	Cancel(j *Job, force bool) bool
}

// Job is one running job.
type Job struct {
	m      *Manager
	spec   Spec
	driver Driver
	rate   *engine.Rate

	ctx    context.Context
	cancel context.CancelFunc

	// Guarded by m.mu.
	status          Status
	pauseCount      int // user pause and error stops
	userPaused      bool
	inPause         bool // parked in PausePoint
	paused          bool // in paused or standby, going back to resumeTo
	resumeTo        Status
	drains          int // drained sections over the job's nodes
	selfDrains      int // drained sections the job opened itself
	busy            bool
	cancelRequested bool
	forceCancel     bool
	speed           int64
	done, total     int64
	ioStatus        string // ok, failed, nospace
	err             error  // why the job failed (ECANCELED when cancelled)
	finished        bool   // Run returned
	finalizing      bool   // Prepare..Clean under way
	exited          chan struct{}
	kick            chan struct{} // cuts a rate-limit sleep short (pause, cancel, set-speed)
}

// ID is the job's id.
func (j *Job) ID() string { return j.spec.ID }

// Type is the job's type (commit, stream, mirror...).
func (j *Job) Type() string { return j.spec.Type }

// Spec is what the job was started with.
func (j *Job) Spec() Spec { return j.spec }

// Driver is the job's driver.
func (j *Job) Driver() Driver { return j.driver }

// Status is the job's current status.
func (j *Job) Status() Status {
	j.m.mu.Lock()
	defer j.m.mu.Unlock()
	return j.status
}

// Info is a snapshot of the job for query-jobs and query-block-jobs.
type Info struct {
	ID, Type     string
	Status       Status
	Done, Total  int64
	Speed        int64
	Busy         bool
	Paused       bool
	Ready        bool
	IOStatus     string
	AutoFinalize bool
	AutoDismiss  bool
	Error        string // "" when the job has not failed
}

// Info describes the job now.
func (j *Job) Info() Info {
	j.m.mu.Lock()
	defer j.m.mu.Unlock()
	in := Info{
		ID: j.spec.ID, Type: j.spec.Type, Status: j.status,
		Done: j.done, Total: j.total, Speed: j.speed,
		Busy: j.busy, Paused: j.pauseCount > 0,
		Ready:    j.status == Ready || j.status == Standby,
		IOStatus: j.ioStatus, AutoFinalize: j.spec.AutoFinalize, AutoDismiss: j.spec.AutoDismiss,
	}
	if j.err != nil {
		in.Error = ErrorText(j.err)
	}
	return in
}

// ErrorText is how QEMU words a job's failure: a failed request is its
// errno's strerror (QEMU's job_update_rc), anything else its own text.
func ErrorText(err error) string {
	var en unix.Errno
	if errors.As(err, &en) {
		return strerrorText(en)
	}
	return err.Error()
}

func strerrorText(e unix.Errno) string {
	// QEMU's messages are glibc's strerror, capitalised; Go's are not.
	s := e.Error()
	if s != "" && s[0] >= 'a' && s[0] <= 'z' {
		s = string(s[0]-'a'+'A') + s[1:]
	}
	return s
}

// Cancelled tells whether the job was cancelled with force (QEMU's
// job_is_cancelled): it ends as BLOCK_JOB_CANCELLED.
func (j *Job) Cancelled() bool {
	j.m.mu.Lock()
	defer j.m.mu.Unlock()
	return j.cancelRequested && j.forceCancel
}

// CancelRequested tells whether any cancel, forced or not, was asked.
func (j *Job) CancelRequested() bool {
	j.m.mu.Lock()
	defer j.m.mu.Unlock()
	return j.cancelRequested
}

// Done is closed when the job has concluded (and, with auto-dismiss, is
// null): nothing of it runs any more.
func (j *Job) Done() <-chan struct{} { return j.exited }

// verbLocked refuses v in the job's current status with QEMU's text;
// m.mu held.
func (j *Job) verbLocked(v Verb) error {
	if Accepts(v, j.status) {
		return nil
	}
	return &VerbError{ID: j.spec.ID, Status: j.status, Verb: v}
}

// VerbError is a verb the job's status refuses.
type VerbError struct {
	ID     string
	Status Status
	Verb   Verb
}

func (e *VerbError) Error() string {
	return fmt.Sprintf("Job '%s' in state '%s' cannot accept command verb '%s'", e.ID, e.Status, e.Verb)
}

// transitionLocked moves the job to s and announces it; m.mu held.
func (j *Job) transitionLocked(s Status) {
	if !CanTransition(j.status, s) {
		panic(fmt.Sprintf("jobs: job %q: transition %s -> %s", j.spec.ID, j.status, s))
	}
	s0 := j.status
	j.status = s
	if s != s0 {
		j.m.emitLocked("JOB_STATUS_CHANGE", Field{"id", j.spec.ID}, Field{"status", string(s)})
	}
}
