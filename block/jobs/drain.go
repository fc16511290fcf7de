package jobs

import (
	"slices"

	"minivmm/block"
)

// DrainObserver pauses the jobs a drained section reaches for as long as
// it lasts (QEMU's child_job_drained_begin/end): a running job goes to
// paused, a ready one to standby, as the section begins, and back as it
// ends, with their JOB_STATUS_CHANGE events. A job reaches a drain
// through any node it holds (Spec.Nodes); the drains a job opens itself
// (a mirror holding its source for the switch) and those after its copy
// ended (the graph changes of its end) do not pause it.
func (m *Manager) DrainObserver() block.DrainObserver {
	return func(nodes []string) func() {
		m.mu.Lock()
		var paused []*Job
		for _, j := range m.jobs {
			if j.finished || j.selfDrains > 0 || !j.drainableLocked() {
				continue
			}
			if !slices.ContainsFunc(j.spec.Nodes, func(n string) bool { return slices.Contains(nodes, n) }) {
				continue
			}
			j.drains++
			j.pauseCount++
			j.pauseStatusLocked()
			paused = append(paused, j)
		}
		m.mu.Unlock()
		if len(paused) == 0 {
			return nil
		}
		return func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, j := range paused {
				j.drains--
				j.pauseCount--
				j.unpausedLocked()
			}
		}
	}
}

// drainableLocked: the job is between running and its end, where QEMU's
// drain finds it in job_pause_point; m.mu held.
func (j *Job) drainableLocked() bool {
	switch j.status {
	case Running, Ready, Paused, Standby:
		return true
	}
	return false
}

// SelfDrain runs drain, a drained section the job opens over its own
// nodes, without pausing the job for it; the job stays unpausable by
// drains until end (what drain returned) is called.
func (j *Job) SelfDrain(drain func() (end func())) (end func()) {
	j.m.mu.Lock()
	j.selfDrains++
	j.m.mu.Unlock()
	e := drain()
	return func() {
		e()
		j.m.mu.Lock()
		j.selfDrains--
		j.m.mu.Unlock()
	}
}

// AddNode adds a node the job holds from now on (Spec.Nodes): a filter
// node its driver made at Setup.
func (j *Job) AddNode(name string) {
	j.m.mu.Lock()
	defer j.m.mu.Unlock()
	j.spec.Nodes = append(slices.Clip(j.spec.Nodes), name)
}
