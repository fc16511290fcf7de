package jobs

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestTransitions(t *testing.T) {
	all := []Status{Undefined, Created, Running, Paused, Ready, Standby, Waiting, Pending, Aborting, Concluded, Null}
	allowed := map[[2]Status]bool{
		{Undefined, Created}: true,
		{Created, Running}:   true, {Created, Aborting}: true, {Created, Null}: true,
		{Running, Paused}: true, {Running, Ready}: true, {Running, Waiting}: true, {Running, Aborting}: true,
		{Paused, Running}: true,
		{Ready, Standby}:  true, {Ready, Waiting}: true, {Ready, Aborting}: true,
		{Standby, Ready}:   true,
		{Waiting, Pending}: true, {Waiting, Aborting}: true,
		{Pending, Aborting}: true, {Pending, Concluded}: true,
		{Aborting, Aborting}: true, {Aborting, Concluded}: true,
		{Concluded, Null}: true,
	}
	for _, a := range all {
		for _, b := range all {
			if got, want := CanTransition(a, b), allowed[[2]Status{a, b}]; got != want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", a, b, got, want)
			}
		}
	}
	if CanTransition("bogus", Running) {
		t.Error("unknown status accepted")
	}
}

func TestVerbTable(t *testing.T) {
	live := []Status{Created, Running, Paused, Ready, Standby, Waiting, Pending}
	busy := []Status{Created, Running, Paused, Ready, Standby}
	tests := []struct {
		verb Verb
		ok   []Status
	}{
		{VerbCancel, live}, {VerbPause, busy}, {VerbResume, busy}, {VerbSetSpeed, busy},
		{VerbComplete, []Status{Ready}}, {VerbFinalize, []Status{Pending}}, {VerbDismiss, []Status{Concluded}},
	}
	for _, tt := range tests {
		for s := range statusIndex {
			if got, want := Accepts(tt.verb, s), slices.Contains(tt.ok, s); got != want {
				t.Errorf("Accepts(%s, %s) = %v, want %v", tt.verb, s, got, want)
			}
		}
	}
	e := &VerbError{ID: "j0", Status: Running, Verb: VerbDismiss}
	if want := "Job 'j0' in state 'running' cannot accept command verb 'dismiss'"; e.Error() != want {
		t.Errorf("got %q, want %q", e.Error(), want)
	}
}

// recorder collects events as strings: "JOB_STATUS_CHANGE running",
// "BLOCK_JOB_COMPLETED".
type recorder struct {
	mu     sync.Mutex
	events []string
	data   [][]Field
	ch     chan string
}

func newRecorder() *recorder { return &recorder{ch: make(chan string, 10000)} }

func (r *recorder) emit(ev string, data []Field) {
	s := ev
	if ev == "JOB_STATUS_CHANGE" {
		s += " " + data[1].Value.(string)
	}
	r.mu.Lock()
	r.events = append(r.events, s)
	r.data = append(r.data, data)
	r.mu.Unlock()
	select {
	case r.ch <- s:
	default:
	}
}

func (r *recorder) waitFor(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case s := <-r.ch:
			if s == want {
				return
			}
		case <-timeout:
			t.Fatalf("no %q; events %v", want, r.list())
		}
	}
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// fakeDriver copies nothing: it steps through total bytes in chunks
// through the job's Wait, and records its hooks.
type fakeDriver struct {
	total, chunk int64
	failAt       int64 // fail with failErr when this offset is reached (-1: never)
	failErr      error
	failOnce     bool
	prepareErr   error
	gate         chan struct{} // when not nil, each step waits for a value
	mu           sync.Mutex
	hooks        []string
}

func (d *fakeDriver) hook(s string) { d.mu.Lock(); d.hooks = append(d.hooks, s); d.mu.Unlock() }

func (d *fakeDriver) Run(ctx context.Context, j *Job) error {
	for off := int64(0); off < d.total; {
		if d.gate != nil {
			select {
			case <-d.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := j.Wait(ctx, d.chunk); err != nil {
			return err
		}
		if off == d.failAt {
			switch j.Error("write", d.failErr) {
			case "report":
				return d.failErr
			case "stop":
				if d.failOnce {
					d.failAt = -1
				}
				continue
			}
		}
		off += d.chunk
		j.Progress(off, d.total)
	}
	return nil
}

func (d *fakeDriver) Prepare(*Job) error { d.hook("prepare"); return d.prepareErr }
func (d *fakeDriver) Commit(*Job)        { d.hook("commit") }
func (d *fakeDriver) Abort(*Job)         { d.hook("abort") }
func (d *fakeDriver) Clean(*Job)         { d.hook("clean") }

// feed keeps a gated driver stepping until the test ends.
func feed(t *testing.T, d *fakeDriver) {
	d.gate = make(chan struct{})
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		for {
			select {
			case d.gate <- struct{}{}:
			case <-stop:
				return
			}
		}
	}()
}

func TestLifecycle(t *testing.T) {
	tests := []struct {
		name    string
		spec    Spec
		drv     *fakeDriver
		control func(t *testing.T, m *Manager, j *Job, r *recorder)
		events  []string
		hooks   []string
	}{
		{
			name: "success",
			spec: Spec{AutoFinalize: true, AutoDismiss: true},
			drv:  &fakeDriver{total: 4096, chunk: 512, failAt: -1},
			events: []string{"JOB_STATUS_CHANGE created", "JOB_STATUS_CHANGE running", "JOB_STATUS_CHANGE waiting",
				"JOB_STATUS_CHANGE pending", "BLOCK_JOB_COMPLETED", "JOB_STATUS_CHANGE concluded", "JOB_STATUS_CHANGE null"},
			hooks: []string{"prepare", "commit", "clean"},
		},
		{
			name: "manual finalize and dismiss",
			spec: Spec{},
			drv:  &fakeDriver{total: 4096, chunk: 512, failAt: -1},
			control: func(t *testing.T, m *Manager, j *Job, r *recorder) {
				r.waitFor(t, "BLOCK_JOB_PENDING")
				if err := j.Dismiss(); err == nil || err.Error() != "Job 'j' in state 'pending' cannot accept command verb 'dismiss'" {
					t.Errorf("dismiss in pending: %v", err)
				}
				if err := j.Finalize(); err != nil {
					t.Fatal(err)
				}
				if err := j.Finalize(); err == nil {
					t.Error("second finalize accepted")
				}
				if in := j.Info(); in.Status != Concluded || in.Done != 4096 || in.Total != 4096 {
					t.Errorf("info %+v", in)
				}
				if err := j.Dismiss(); err != nil {
					t.Fatal(err)
				}
				if _, ok := m.Job("j"); ok {
					t.Error("dismissed job still listed")
				}
			},
			events: []string{"JOB_STATUS_CHANGE created", "JOB_STATUS_CHANGE running", "JOB_STATUS_CHANGE waiting",
				"JOB_STATUS_CHANGE pending", "BLOCK_JOB_PENDING", "BLOCK_JOB_COMPLETED", "JOB_STATUS_CHANGE concluded", "JOB_STATUS_CHANGE null"},
			hooks: []string{"prepare", "commit", "clean"},
		},
		{
			name: "cancel while paused",
			spec: Spec{AutoFinalize: true, AutoDismiss: true},
			drv:  &fakeDriver{total: 1 << 30, chunk: 512, failAt: -1},
			control: func(t *testing.T, m *Manager, j *Job, r *recorder) {
				if err := j.Pause(); err != nil {
					t.Fatal(err)
				}
				if err := j.Pause(); err == nil || err.Error() != "Job is already paused" {
					t.Errorf("second pause: %v", err)
				}
				r.waitFor(t, "JOB_STATUS_CHANGE paused")
				if in := j.Info(); !in.Paused || in.Busy {
					t.Errorf("paused job: %+v", in)
				}
				if err := j.Cancel(false); err != nil {
					t.Fatal(err)
				}
				<-j.Done()
			},
			events: []string{"JOB_STATUS_CHANGE created", "JOB_STATUS_CHANGE running", "JOB_STATUS_CHANGE paused",
				"JOB_STATUS_CHANGE running", "JOB_STATUS_CHANGE aborting", "BLOCK_JOB_CANCELLED", "JOB_STATUS_CHANGE concluded", "JOB_STATUS_CHANGE null"},
			hooks: []string{"abort", "clean"},
		},
		{
			name: "error report",
			spec: Spec{AutoFinalize: true, AutoDismiss: false},
			drv:  &fakeDriver{total: 4096, chunk: 512, failAt: 1024, failErr: unix.EIO},
			control: func(t *testing.T, m *Manager, j *Job, r *recorder) {
				<-j.Done()
				if in := j.Info(); in.Status != Concluded || in.Error != "Input/output error" {
					t.Errorf("info %+v", in)
				}
				if err := j.Cancel(true); err == nil {
					t.Error("cancel of a concluded job accepted")
				}
				if err := j.Dismiss(); err != nil {
					t.Fatal(err)
				}
			},
			events: []string{"JOB_STATUS_CHANGE created", "JOB_STATUS_CHANGE running", "BLOCK_JOB_ERROR",
				"JOB_STATUS_CHANGE aborting", "BLOCK_JOB_COMPLETED", "JOB_STATUS_CHANGE concluded", "JOB_STATUS_CHANGE null"},
			hooks: []string{"abort", "clean"},
		},
		{
			name: "error stop then resume",
			spec: Spec{AutoFinalize: true, AutoDismiss: true, OnError: "enospc"},
			drv:  &fakeDriver{total: 4096, chunk: 512, failAt: 1024, failErr: unix.ENOSPC, failOnce: true},
			control: func(t *testing.T, m *Manager, j *Job, r *recorder) {
				r.waitFor(t, "JOB_STATUS_CHANGE paused")
				if in := j.Info(); in.IOStatus != "nospace" || !in.Paused {
					t.Errorf("stopped job: %+v", in)
				}
				if err := j.Resume(); err != nil {
					t.Fatal(err)
				}
				if err := j.Resume(); err == nil || err.Error() != "Can't resume a job that was not paused" {
					t.Errorf("second resume: %v", err)
				}
				<-j.Done()
			},
			events: []string{"JOB_STATUS_CHANGE created", "JOB_STATUS_CHANGE running", "BLOCK_JOB_ERROR", "JOB_STATUS_CHANGE paused",
				"JOB_STATUS_CHANGE running", "JOB_STATUS_CHANGE waiting", "JOB_STATUS_CHANGE pending", "BLOCK_JOB_COMPLETED",
				"JOB_STATUS_CHANGE concluded", "JOB_STATUS_CHANGE null"},
			hooks: []string{"prepare", "commit", "clean"},
		},
		{
			name: "prepare fails",
			spec: Spec{AutoFinalize: true, AutoDismiss: true},
			drv:  &fakeDriver{total: 512, chunk: 512, failAt: -1, prepareErr: errors.New("no luck")},
			events: []string{"JOB_STATUS_CHANGE created", "JOB_STATUS_CHANGE running", "JOB_STATUS_CHANGE waiting",
				"JOB_STATUS_CHANGE pending", "JOB_STATUS_CHANGE aborting", "BLOCK_JOB_COMPLETED", "JOB_STATUS_CHANGE concluded", "JOB_STATUS_CHANGE null"},
			hooks: []string{"prepare", "abort", "clean"},
		},
		{
			name: "cancel pending",
			spec: Spec{AutoDismiss: true},
			drv:  &fakeDriver{total: 512, chunk: 512, failAt: -1},
			control: func(t *testing.T, m *Manager, j *Job, r *recorder) {
				r.waitFor(t, "BLOCK_JOB_PENDING")
				if err := j.Cancel(false); err != nil {
					t.Fatal(err)
				}
				<-j.Done()
			},
			events: []string{"JOB_STATUS_CHANGE created", "JOB_STATUS_CHANGE running", "JOB_STATUS_CHANGE waiting",
				"JOB_STATUS_CHANGE pending", "BLOCK_JOB_PENDING", "JOB_STATUS_CHANGE aborting", "BLOCK_JOB_CANCELLED", "JOB_STATUS_CHANGE concluded", "JOB_STATUS_CHANGE null"},
			hooks: []string{"abort", "clean"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRecorder()
			m := NewManager(r.emit)
			tt.spec.ID, tt.spec.Type = "j", "commit"
			if tt.drv.total > 1<<20 {
				feed(t, tt.drv)
			}
			j, err := m.Start(tt.spec, tt.drv)
			if err != nil {
				t.Fatal(err)
			}
			if tt.control != nil {
				tt.control(t, m, j, r)
			}
			<-j.Done()
			m.CancelAll()
			if got := r.list(); !slices.Equal(got, tt.events) {
				t.Errorf("events\n got %v\nwant %v", got, tt.events)
			}
			if !slices.Equal(tt.drv.hooks, tt.hooks) {
				t.Errorf("hooks %v, want %v", tt.drv.hooks, tt.hooks)
			}
		})
	}
}

func TestStartErrors(t *testing.T) {
	m := NewManager(nil)
	d := &fakeDriver{total: 1 << 30, chunk: 512, failAt: -1}
	feed(t, d)
	if _, err := m.Start(Spec{ID: "a", Type: "stream"}, d); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		spec Spec
		want string
	}{
		{Spec{ID: "a"}, "Job ID 'a' already in use"},
		{Spec{ID: "1x"}, "Invalid job ID '1x'"},
		{Spec{ID: "b", Speed: -1}, "Parameter 'speed' expects a non-negative value"},
	} {
		if _, err := m.Start(tt.spec, d); err == nil || err.Error() != tt.want {
			t.Errorf("Start(%+v) = %v, want %q", tt.spec, err, tt.want)
		}
	}
	j, _ := m.Job("a")
	for _, tt := range []struct {
		f    func() error
		want string
	}{
		{j.Complete, "Job 'a' in state 'running' cannot accept command verb 'complete'"},
		{j.Finalize, "Job 'a' in state 'running' cannot accept command verb 'finalize'"},
		{j.Dismiss, "Job 'a' in state 'running' cannot accept command verb 'dismiss'"},
		{j.Resume, "Can't resume a job that was not paused"},
		{func() error { return j.SetSpeed(-5) }, "Parameter 'speed' expects a non-negative value"},
	} {
		if err := tt.f(); err == nil || err.Error() != tt.want {
			t.Errorf("got %v, want %q", err, tt.want)
		}
	}
	m.CancelAll()
	if len(m.Jobs()) != 0 {
		t.Error("jobs left after CancelAll")
	}
}

// TestRandomControl pauses, resumes, changes speed and cancels at random
// points; the job must always end, with a consistent event sequence.
func TestRandomControl(t *testing.T) {
	for seed := int64(0); seed < 30; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			r := newRecorder()
			m := NewManager(r.emit)
			d := &fakeDriver{total: 64 << 10, chunk: 512, failAt: -1}
			j, err := m.Start(Spec{ID: "j", Type: "stream", AutoFinalize: rng.Intn(2) == 0, AutoDismiss: true}, d)
			if err != nil {
				t.Fatal(err)
			}
			cancelled := false
			for i := 0; i < 20; i++ {
				time.Sleep(time.Duration(rng.Intn(200)) * time.Microsecond)
				switch rng.Intn(5) {
				case 0:
					j.Pause()
				case 1:
					j.Resume()
				case 2:
					j.SetSpeed(int64(rng.Intn(3)) << 20)
				case 3:
					if j.Cancel(rng.Intn(2) == 0) == nil {
						cancelled = true
					}
				case 4:
					j.Finalize()
				}
			}
			if !cancelled {
				j.Resume()
				j.Finalize()
			}
			m.CancelAll()
			ev := r.list()
			if ev[len(ev)-1] != "JOB_STATUS_CHANGE null" {
				t.Fatalf("did not end: %v", ev)
			}
			ends := 0
			for _, e := range ev {
				if strings.HasPrefix(e, "BLOCK_JOB_COMPLETED") || strings.HasPrefix(e, "BLOCK_JOB_CANCELLED") {
					ends++
				}
			}
			if ends != 1 {
				t.Errorf("%d completion events: %v", ends, ev)
			}
			// Every status change is one QEMU allows.
			prev := Undefined
			for _, e := range ev {
				if s, ok := strings.CutPrefix(e, "JOB_STATUS_CHANGE "); ok {
					if !CanTransition(prev, Status(s)) {
						t.Errorf("transition %s -> %s in %v", prev, s, ev)
					}
					prev = Status(s)
				}
			}
		})
	}
}

// TestSpeed: a job at a speed takes about the time its bytes need; a job
// without a limit takes much less. Bounds are generous (ratio only).
func TestSpeed(t *testing.T) {
	run := func(speed int64) time.Duration {
		m := NewManager(nil)
		d := &fakeDriver{total: 1 << 20, chunk: 64 << 10, failAt: -1}
		start := time.Now()
		j, err := m.Start(Spec{ID: "j", Type: "commit", Speed: speed, AutoFinalize: true, AutoDismiss: true}, d)
		if err != nil {
			t.Fatal(err)
		}
		<-j.Done()
		return time.Since(start)
	}
	free := run(0)
	limited := run(4 << 20) // 1 MiB at 4 MiB/s: about 250 ms
	if limited < 150*time.Millisecond || limited < 5*free {
		t.Errorf("limited %v, free %v", limited, free)
	}
}

type failingSetup struct{ fakeDriver }

func (*failingSetup) Setup(*Job) error { return errors.New("no fd") }

// TestEarlyFail: a job whose speed or setup is refused goes created ->
// null, is not listed, and its id is free again (QEMU's job_early_fail).
func TestEarlyFail(t *testing.T) {
	for _, tt := range []struct {
		spec Spec
		drv  Driver
		want string
	}{
		{Spec{ID: "j", Speed: -1}, &fakeDriver{failAt: -1}, "Parameter 'speed' expects a non-negative value"},
		{Spec{ID: "j"}, &failingSetup{}, "no fd"},
	} {
		r := newRecorder()
		m := NewManager(r.emit)
		if _, err := m.Start(tt.spec, tt.drv); err == nil || err.Error() != tt.want {
			t.Errorf("Start: %v, want %q", err, tt.want)
		}
		if got := strings.Join(r.list(), ","); got != "JOB_STATUS_CHANGE created,JOB_STATUS_CHANGE null" {
			t.Errorf("events %s", got)
		}
		if len(m.Jobs()) != 0 {
			t.Error("failed job listed")
		}
		if _, err := m.Start(Spec{ID: "j", AutoFinalize: true, AutoDismiss: true}, &fakeDriver{total: 512, chunk: 512, failAt: -1}); err != nil {
			t.Errorf("id not free again: %v", err)
		}
		m.CancelAll()
	}
}
