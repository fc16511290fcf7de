package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

var errCanceled error = unix.ECANCELED

// kickLocked wakes the job from a rate-limit sleep or a pause; m.mu held.
func (j *Job) kickLocked() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
	j.m.cond.Broadcast()
}

// sleep is the job's rate-limit sleep (QEMU's job_sleep_ns): the job is
// not busy meanwhile, and a pause, cancel or new speed ends it early.
func (j *Job) sleep(ctx context.Context, d time.Duration) error {
	j.setBusy(false)
	defer j.setBusy(true)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-j.kick:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func (j *Job) setBusy(b bool) {
	j.m.mu.Lock()
	j.busy = b
	j.m.mu.Unlock()
}

// PausePoint is the driver's yield point (QEMU's job_pause_point): while
// the job is paused (by the user, an error stop or a drained section over
// its nodes) it waits there in status paused (standby if it was ready).
// It returns ctx's error once the job is cancelled.
func (j *Job) PausePoint(ctx context.Context) error {
	m := j.m
	m.mu.Lock()
	for j.pauseCount > 0 && !(j.cancelRequested && j.forceCancel) && ctx.Err() == nil {
		j.pauseStatusLocked()
		j.inPause, j.busy = true, false
		m.cond.Wait()
	}
	if j.inPause {
		j.inPause, j.busy = false, true
	}
	j.unpauseStatusLocked()
	m.mu.Unlock()
	return ctx.Err()
}

// pauseStatusLocked moves a running or ready job to paused or standby,
// remembering where it goes back to; m.mu held.
func (j *Job) pauseStatusLocked() {
	if j.paused || (j.status != Running && j.status != Ready) {
		return
	}
	j.resumeTo = j.status
	if j.status == Ready {
		j.transitionLocked(Standby)
	} else {
		j.transitionLocked(Paused)
	}
	j.paused = true
}

// unpauseStatusLocked moves a paused job back to where it was; m.mu held.
func (j *Job) unpauseStatusLocked() {
	if !j.paused {
		return
	}
	j.paused = false
	j.transitionLocked(j.resumeTo)
}

// unpausedLocked is called when a pause ends (a resume, a drained
// section's end): with no pause left the job goes back to its status at
// once, as QEMU's job_resume re-enters the job before returning, and one
// parked in PausePoint wakes. m.mu held.
func (j *Job) unpausedLocked() {
	if j.pauseCount == 0 {
		j.unpauseStatusLocked()
	}
	j.kickLocked()
}

// waitUnpausedLocked holds the job's own status changes (ready, its
// completion) while a drained section keeps it paused, as a QEMU job
// cannot leave its pause point meanwhile; m.mu held.
func (j *Job) waitUnpausedLocked() {
	for j.paused && !j.inPause {
		j.m.cond.Wait()
	}
}

// Limit holds the job to its speed: it returns once n more bytes may be
// copied (QEMU's ratelimit in 100 ms slices), or with ctx's error.
func (j *Job) Limit(ctx context.Context, n int64) error {
	return j.rate.Wait(ctx, n)
}

// Wait is the engines' Limiter: the rate limit, then a pause point.
func (j *Job) Wait(ctx context.Context, n int64) error {
	if err := j.Limit(ctx, n); err != nil {
		return err
	}
	return j.PausePoint(ctx)
}

// Progress records how much of the work is done, out of total (both
// bytes): query-jobs' current-progress and total-progress.
func (j *Job) Progress(done, total int64) {
	j.m.mu.Lock()
	j.done, j.total = done, total
	j.m.mu.Unlock()
}

// Ready moves a running job to ready, announcing BLOCK_JOB_READY (mirror
// and active commit, once source and target are in sync).
func (j *Job) Ready() {
	m := j.m
	m.mu.Lock()
	defer m.mu.Unlock()
	j.waitUnpausedLocked()
	if j.status != Running {
		return
	}
	j.transitionLocked(Ready)
	m.emitLocked("BLOCK_JOB_READY", Field{"type", j.spec.Type}, Field{"device", j.spec.ID},
		Field{"len", j.total}, Field{"offset", j.done}, Field{"speed", j.speed})
}

// Error applies the job's on-error policy to a failed read or write (op
// "read" or "write"), as QEMU's block_job_error_action: it announces
// BLOCK_JOB_ERROR and says what the driver does: "report" (fail the job
// with err), "ignore" (go on) or "stop" (the job is paused; call
// PausePoint, then retry).
func (j *Job) Error(op string, err error) (action string) {
	return j.ErrorWith(j.spec.OnError, op, err)
}

// ErrorWith is Error under another policy than the job's on-error (a
// mirror's on-source-error and on-target-error).
func (j *Job) ErrorWith(policy, op string, err error) (action string) {
	nospace := errors.Is(err, unix.ENOSPC)
	switch policy {
	case "stop":
		action = "stop"
	case "ignore":
		action = "ignore"
	case "enospc", "auto":
		action = "report"
		if nospace {
			action = "stop"
		}
	default:
		action = "report"
	}
	m := j.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.emitLocked("BLOCK_JOB_ERROR", Field{"device", j.spec.ID}, Field{"operation", op}, Field{"action", action})
	if action == "stop" {
		if !j.userPaused {
			j.pauseCount++
			j.userPaused = true
		}
		j.ioStatus = "failed"
		if nospace {
			j.ioStatus = "nospace"
		}
	}
	return action
}

// Cancel is QMP's job-cancel/block-job-cancel.
func (j *Job) Cancel(force bool) error {
	j.m.mu.Lock()
	err := j.verbLocked(VerbCancel)
	j.m.mu.Unlock()
	if err != nil {
		return err
	}
	j.doCancel(force)
	return nil
}

// doCancel is QEMU's job_cancel. A job already finalizing (its graph
// changes under way) is past cancelling: QEMU, single-threaded, cannot
// be asked in between; here the request is too late and changes nothing.
func (j *Job) doCancel(force bool) {
	m := j.m
	m.mu.Lock()
	late := j.finalizing
	m.mu.Unlock()
	if late {
		return
	}
	if c, ok := j.driver.(Canceller); ok {
		force = c.Cancel(j, force)
	} else {
		force = true
	}
	m.mu.Lock()
	if j.finalizing {
		m.mu.Unlock()
		return
	}
	if j.userPaused {
		j.userPaused = false
		j.pauseCount--
		j.unpausedLocked()
	}
	j.cancelRequested = true
	j.forceCancel = j.forceCancel || force
	if j.forceCancel {
		j.cancel()
	}
	j.kickLocked()
	abortNow := j.finished && j.status == Pending
	if abortNow {
		j.finalizing = true
		j.updateRCLocked(nil)
	}
	m.mu.Unlock()
	if abortNow {
		j.finalizeSingle()
	}
}

// Pause is QMP's job-pause/block-job-pause: the job stops at its next
// pause point.
func (j *Job) Pause() error {
	m := j.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := j.verbLocked(VerbPause); err != nil {
		return err
	}
	if j.userPaused {
		return errors.New("Job is already paused")
	}
	j.userPaused = true
	j.pauseCount++
	j.kickLocked()
	return nil
}

// Resume is QMP's job-resume/block-job-resume.
func (j *Job) Resume() error {
	m := j.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if !j.userPaused || j.pauseCount <= 0 {
		return errors.New("Can't resume a job that was not paused")
	}
	if err := j.verbLocked(VerbResume); err != nil {
		return err
	}
	j.userPaused = false
	j.ioStatus = "ok"
	j.pauseCount--
	j.unpausedLocked()
	return nil
}

// SetSpeed is QMP's block-job-set-speed: a new rate, 0 for none.
func (j *Job) SetSpeed(speed int64) error {
	m := j.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := j.verbLocked(VerbSetSpeed); err != nil {
		return err
	}
	if speed < 0 {
		return errors.New("Parameter 'speed' expects a non-negative value")
	}
	if speed == j.speed {
		return nil
	}
	j.speed = speed
	j.rate.SetSpeed(speed)
	j.kickLocked()
	return nil
}

// Complete is QMP's job-complete/block-job-complete: a ready job's
// driver ends it (mirror's pivot).
func (j *Job) Complete() error {
	m := j.m
	m.mu.Lock()
	if err := j.verbLocked(VerbComplete); err != nil {
		m.mu.Unlock()
		return err
	}
	c, ok := j.driver.(Completer)
	if j.pauseCount > 0 || j.cancelRequested || !ok {
		m.mu.Unlock()
		return fmt.Errorf("The active block job '%s' cannot be completed", j.spec.ID)
	}
	m.mu.Unlock()
	return c.Complete(j)
}

// Finalize is QMP's job-finalize: a pending job (auto-finalize off) makes
// its graph changes and concludes.
func (j *Job) Finalize() error {
	m := j.m
	m.mu.Lock()
	if err := j.verbLocked(VerbFinalize); err != nil {
		m.mu.Unlock()
		return err
	}
	if j.finalizing {
		m.mu.Unlock()
		return &VerbError{ID: j.spec.ID, Status: Concluded, Verb: VerbFinalize}
	}
	j.finalizing = true
	m.mu.Unlock()
	j.doFinalize()
	return nil
}

// Dismiss is QMP's job-dismiss: a concluded job (auto-dismiss off) goes.
func (j *Job) Dismiss() error {
	m := j.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := j.verbLocked(VerbDismiss); err != nil {
		return err
	}
	j.dismissLocked()
	return nil
}
