package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"minivmm/block"
	"minivmm/block/engine"
)

// Field is one member of an event's data, in QEMU's order.
type Field struct {
	Key   string
	Value any
}

// Manager owns one VMM's jobs (QEMU's job list). Its emit gets every
// event, in order, from one job at a time.
type Manager struct {
	emit func(event string, data []Field)

	mu   sync.Mutex
	cond sync.Cond // broadcast on every change a PausePoint or waiter looks at
	jobs []*Job    // in creation order
	wg   sync.WaitGroup
}

// NewManager is a manager that announces events through emit (nil: none).
func NewManager(emit func(event string, data []Field)) *Manager {
	m := &Manager{emit: emit}
	m.cond.L = &m.mu
	return m
}

func (m *Manager) emitLocked(event string, data ...Field) {
	if m.emit != nil {
		m.emit(event, data)
	}
}

// Job finds a job (still existing, i.e. not yet null) by id.
func (m *Manager) Job(id string) (*Job, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, j := range m.jobs {
		if j.spec.ID == id {
			return j, true
		}
	}
	return nil, false
}

// Jobs lists the existing jobs, newest first as QEMU's list is.
func (m *Manager) Jobs() []*Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := slices.Clone(m.jobs)
	slices.Reverse(out)
	return out
}

// Busy says which job, if any, holds node (Spec.Nodes): until it is
// dismissed, as QEMU's op blockers stay on a concluded job's nodes.
func (m *Manager) Busy(node string) (*Job, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, j := range m.jobs {
		if slices.Contains(j.spec.Nodes, node) {
			return j, true
		}
	}
	return nil, false
}

// Start creates a job and runs d in its own goroutine: created, then
// running. Its errors are QEMU's texts.
func (m *Manager) Start(s Spec, d Driver) (*Job, error) {
	if !block.WellFormedID(s.ID) {
		return nil, fmt.Errorf("Invalid job ID '%s'", s.ID)
	}
	if s.OnError == "" {
		s.OnError = "report"
	}
	ctx, cancel := context.WithCancel(context.Background())
	j := &Job{
		m: m, spec: s, driver: d, rate: engine.NewRate(s.Speed),
		ctx: ctx, cancel: cancel, status: Undefined, speed: s.Speed,
		ioStatus: "ok", exited: make(chan struct{}), kick: make(chan struct{}, 1),
	}
	j.rate.Sleep = j.sleep
	m.mu.Lock()
	for _, o := range m.jobs {
		if o.spec.ID == s.ID {
			m.mu.Unlock()
			cancel()
			return nil, fmt.Errorf("Job ID '%s' already in use", s.ID)
		}
	}
	m.jobs = append(m.jobs, j)
	j.transitionLocked(Created)
	m.mu.Unlock()
	// As QEMU's block_job_create then the driver's start: the speed is
	// set on the created job, then the driver sets up; either failing
	// takes the job to null (job_early_fail).
	var err error
	if s.Speed < 0 {
		err = fmt.Errorf("Parameter 'speed' expects a non-negative value")
	} else if st, ok := d.(Starter); ok {
		err = st.Setup(j)
	}
	if err != nil {
		m.mu.Lock()
		j.dismissLocked()
		close(j.exited)
		m.mu.Unlock()
		cancel()
		return nil, err
	}
	m.mu.Lock()
	j.transitionLocked(Running)
	j.busy = true
	m.wg.Add(1)
	m.mu.Unlock()
	go j.run()
	return j, nil
}

// run is the job's goroutine: QEMU's job_co_entry and job_exit.
func (j *Job) run() {
	defer j.m.wg.Done()
	var err error
	if err = j.PausePoint(j.ctx); err == nil {
		err = j.driver.Run(j.ctx, j)
	}
	m := j.m
	m.mu.Lock()
	j.finished = true
	j.busy = false
	m.mu.Unlock()
	j.completed(err)
}

// completed is QEMU's job_completed for a job in a transaction of its own.
func (j *Job) completed(err error) {
	m := j.m
	m.mu.Lock()
	j.waitUnpausedLocked()
	j.updateRCLocked(err)
	if j.err != nil {
		m.mu.Unlock()
		j.finalizeSingle()
		return
	}
	j.transitionLocked(Waiting)
	j.transitionLocked(Pending)
	if !j.spec.AutoFinalize {
		m.emitLocked("BLOCK_JOB_PENDING", Field{"type", j.spec.Type}, Field{"id", j.spec.ID})
		m.cond.Broadcast()
		m.mu.Unlock()
		return
	}
	j.finalizing = true
	m.mu.Unlock()
	j.doFinalize()
}

// updateRCLocked records err (or the cancel) as the job's failure and
// moves it to aborting; m.mu held.
func (j *Job) updateRCLocked(err error) {
	if j.err == nil {
		switch {
		case err != nil && j.cancelRequested && j.forceCancel && errors.Is(err, context.Canceled):
			j.err = errCanceled
		case err != nil:
			j.err = err
		case j.cancelRequested && j.forceCancel:
			j.err = errCanceled
		}
	}
	if j.err != nil {
		j.transitionLocked(Aborting)
	}
}

// doFinalize prepares the job and then commits or aborts it.
func (j *Job) doFinalize() {
	if f, ok := j.driver.(Finisher); ok {
		if err := f.Prepare(j); err != nil {
			j.m.mu.Lock()
			j.updateRCLocked(err)
			j.m.mu.Unlock()
		}
	}
	j.finalizeSingle()
}

// finalizeSingle is QEMU's job_finalize_single: commit or abort, clean,
// the completion event, then concluded (and null with auto-dismiss).
func (j *Job) finalizeSingle() {
	m := j.m
	m.mu.Lock()
	j.updateRCLocked(nil)
	failed := j.err != nil
	m.mu.Unlock()
	if f, ok := j.driver.(Finisher); ok {
		if failed {
			f.Abort(j)
		} else {
			f.Commit(j)
		}
		f.Clean(j)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	data := []Field{{"type", j.spec.Type}, {"device", j.spec.ID}, {"len", j.total}, {"offset", j.done}, {"speed", j.speed}}
	if j.cancelRequested && j.forceCancel {
		m.emitLocked("BLOCK_JOB_CANCELLED", data...)
	} else {
		if failed {
			data = append(data, Field{"error", ErrorText(j.err)})
		}
		m.emitLocked("BLOCK_JOB_COMPLETED", data...)
	}
	j.transitionLocked(Concluded)
	if j.spec.AutoDismiss {
		j.dismissLocked()
	}
	close(j.exited)
	m.cond.Broadcast()
}

// dismissLocked is QEMU's job_do_dismiss: null, and gone from the list.
func (j *Job) dismissLocked() {
	j.busy = false
	j.transitionLocked(Null)
	j.m.jobs = slices.DeleteFunc(j.m.jobs, func(o *Job) bool { return o == j })
	j.m.cond.Broadcast()
}

// CancelAll cancels every job with force and waits until each has ended
// and is dismissed (QEMU's job_cancel_sync_all, on quit).
func (m *Manager) CancelAll() {
	for {
		m.mu.Lock()
		if len(m.jobs) == 0 {
			m.mu.Unlock()
			break
		}
		j := m.jobs[0]
		m.mu.Unlock()
		j.cancelSync()
	}
	m.wg.Wait()
}

// cancelSync cancels j, waits for it to end and dismisses it.
func (j *Job) cancelSync() {
	m := j.m
	m.mu.Lock()
	if j.status == Concluded {
		j.dismissLocked()
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	j.doCancel(true)
	m.mu.Lock()
	for j.status != Concluded && j.status != Null {
		m.cond.Wait()
	}
	if j.status == Concluded {
		j.dismissLocked()
	}
	m.mu.Unlock()
}
