package runtool

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"minivmm/internal/qmpclient"
)

// jobWait bounds the wait for one job event: a commit of these images
// takes a second or two on a busy machine.
const jobWait = 2 * time.Minute

// jobLog follows the events of every job on one connection.
type jobLog struct {
	mu       sync.Mutex
	statuses map[string][]string  // job id -> JOB_STATUS_CHANGE statuses
	at       map[string]time.Time // "id/status" -> the event's time
	events   map[string][]string  // job id -> BLOCK_JOB_* events
}

func newJobLog() *jobLog {
	return &jobLog{statuses: map[string][]string{}, at: map[string]time.Time{}, events: map[string][]string{}}
}

func (l *jobLog) add(e qmpclient.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case e.Name == "JOB_STATUS_CHANGE":
		id, s := e.Str("id"), e.Str("status")
		l.statuses[id] = append(l.statuses[id], s)
		l.at[id+"/"+s] = e.Time
	case strings.HasPrefix(e.Name, "BLOCK_JOB_"):
		id := e.Str("device")
		if id == "" {
			id = e.Str("id")
		}
		l.events[id] = append(l.events[id], e.Name)
	}
}

// line renders job id's events.
func (l *jobLog) line(id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("job %s: %s; %s", id, strings.Join(l.statuses[id], " "), strings.Join(l.events[id], " "))
}

// check says whether job id went through want, exactly.
func (l *jobLog) check(id string, want ...string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if got := strings.Join(l.statuses[id], " "); got != strings.Join(want, " ") {
		return fmt.Errorf("job %s went %s, expected %s", id, got, strings.Join(want, " "))
	}
	return nil
}

// between is the VMM's time from job id's status a to b.
func (l *jobLog) between(id, a, b string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.at[id+"/"+b].Sub(l.at[id+"/"+a])
}

// live does the chain operations of every chain that has a snapshot
// image, after delay, on a connection of its own (the workload's
// x-workload holds the other): running tells whether the workload still
// runs.
func (r *runner) live(sock string, delay time.Duration, running func() bool) error {
	time.Sleep(delay)
	c, err := qmpclient.Dial(sock, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	log := newJobLog()
	c.OnEvent = log.add
	for _, ch := range r.chains {
		if ch.snap == nil {
			continue
		}
		if err := r.liveChain(c, log, ch, running); err != nil {
			return err
		}
	}
	return nil
}

// liveChain snapshots ch's top onto ch.snap as libvirt does
// (blockdev-add of the overlay over its own fdset, blockdev-snapshot),
// commits the old top into its backing image if it has one (base
// read-write for the job), then commits the snapshot into the bottom
// image with an active commit that pivots the device onto it, printing
// each step's time and the fds after it.
func (r *runner) liveChain(c *qmpclient.Client, log *jobLog, ch *chain, running func() bool) error {
	top, snap := ch.top, ch.snap
	began := time.Now()
	if _, err := c.Execute("blockdev-add", map[string]any{"driver": "file", "node-name": snap.node + "-file",
		"filename": fmt.Sprintf("/dev/fdset/%d", snap.set), "auto-read-only": true, "discard": "unmap"}); err != nil {
		return fmt.Errorf("blockdev-add: %w", err)
	}
	if _, err := c.Execute("blockdev-add", map[string]any{"driver": "qcow2", "node-name": snap.node,
		"file": snap.node + "-file", "backing": nil}); err != nil {
		c.Execute("blockdev-del", map[string]any{"node-name": snap.node + "-file"})
		return fmt.Errorf("blockdev-add: %w", err)
	}
	added := time.Since(began)
	began = time.Now()
	if _, err := c.Execute("blockdev-snapshot", map[string]any{"node": top.node, "overlay": snap.node}); err != nil {
		c.Execute("blockdev-del", map[string]any{"node-name": snap.node})
		c.Execute("blockdev-del", map[string]any{"node-name": snap.node + "-file"})
		return fmt.Errorf("blockdev-snapshot: %w", err)
	}
	switched := time.Since(began)
	snap.open, snap.rw, top.rw = true, true, false
	r.phase(fmt.Sprintf("live snapshot: %s over %s (blockdev-add %s, blockdev-snapshot %s: %s reopened read-only)",
		snap.name(), top.name(), ms(added), ms(switched), top.name()))

	if base := top.backing; base != nil {
		if err := r.intermediateCommit(c, log, top, base, snap); err != nil {
			return err
		}
	}
	return r.activeCommit(c, log, snap, ch.bottom(), running)
}

// intermediateCommit commits top into base under snap, with
// auto-finalize off so that the base is seen read-write while the job
// waits, and the finalize (snap's backing link rewritten, base back to
// read-only) is timed on its own; then drops top's nodes, as libvirt
// does.
func (r *runner) intermediateCommit(c *qmpclient.Client, log *jobLog, top, base, snap *image) error {
	id := "commit-" + top.node
	began := time.Now()
	// backing-file, as libvirt gives it: snap's header is to name the
	// base's path, not the /dev/fdset/N it was opened as.
	backing, err := filepath.Abs(base.path)
	if err != nil {
		return err
	}
	if _, err := c.Execute("block-commit", map[string]any{"job-id": id, "device": snap.node,
		"top-node": top.node, "base-node": base.node, "backing-file": backing, "auto-finalize": false}); err != nil {
		return fmt.Errorf("block-commit: %w", err)
	}
	base.rw = true
	r.phase(fmt.Sprintf("commit %s into %s (block-commit %s: %s reopened read-write)", top.name(), base.name(), ms(time.Since(began)), base.name()))
	if _, err := waitJob(c, id, "BLOCK_JOB_PENDING"); err != nil {
		cancelJob(c, id)
		return err
	}
	r.phase(fmt.Sprintf("commit copied, pending (%s after it started)", ms(log.between(id, "running", "pending"))))
	began = time.Now()
	if _, err := c.Execute("job-finalize", map[string]any{"id": id}); err != nil {
		return fmt.Errorf("job-finalize: %w", err)
	}
	finalized := time.Since(began)
	e, err := waitJob(c, id, "BLOCK_JOB_COMPLETED")
	if err != nil {
		return err
	}
	if msg := e.Str("error"); msg != "" {
		return fmt.Errorf("commit %s: %s", id, msg)
	}
	if err := waitGone(c, id); err != nil {
		return err
	}
	base.rw = false
	r.phase(fmt.Sprintf("commit finalized (job-finalize %s: %s now over %s, %s reopened read-only)", ms(finalized), snap.name(), base.name(), base.name()))
	r.printf("          %s\n", log.line(id))
	if err := log.check(id, "created", "running", "waiting", "pending", "concluded", "null"); err != nil {
		return err
	}
	began = time.Now()
	if err := blockdevDel(c, top); err != nil {
		return err
	}
	r.phase(fmt.Sprintf("blockdev-del %s, out of the chain (%s)", top.name(), ms(time.Since(began))))
	return nil
}

// activeCommit commits snap, the active layer, into bottom: bottom goes
// read-write, the job mirrors the guest's writes until READY, and
// block-job-complete pivots the device onto bottom, which stays
// read-write; then snap's nodes go.
func (r *runner) activeCommit(c *qmpclient.Client, log *jobLog, snap, bottom *image, running func() bool) error {
	id := "commit-" + snap.node
	began := time.Now()
	if _, err := c.Execute("block-commit", map[string]any{"job-id": id, "device": snap.node,
		"top-node": snap.node, "base-node": bottom.node}); err != nil {
		return fmt.Errorf("block-commit: %w", err)
	}
	bottom.rw = true
	r.phase(fmt.Sprintf("active commit %s into %s (block-commit %s: %s reopened read-write)", snap.name(), bottom.name(), ms(time.Since(began)), bottom.name()))
	e, err := waitJob(c, id, "BLOCK_JOB_READY")
	if err != nil {
		cancelJob(c, id)
		return err
	}
	r.phase(fmt.Sprintf("active commit READY (%s after it started, %d MiB copied)", ms(log.between(id, "running", "ready")), num(e.Data["offset"])>>20))
	began = time.Now()
	under := running()
	if _, err := c.Execute("block-job-complete", map[string]any{"device": id}); err != nil {
		cancelJob(c, id)
		return fmt.Errorf("block-job-complete: %w", err)
	}
	if e, err = waitJob(c, id, "BLOCK_JOB_COMPLETED"); err != nil {
		return err
	}
	if msg := e.Str("error"); msg != "" {
		return fmt.Errorf("active commit %s: %s", id, msg)
	}
	if err := waitGone(c, id); err != nil {
		return err
	}
	pivot := time.Since(began)
	when := "under the running workload"
	if !under || !running() {
		when = "as the workload ended"
	}
	// snap is out of the guest's path but still a read-write node, so
	// its file keeps its O_RDWR fd until blockdev-del, as in QEMU (a
	// read-write format takes write on its file whether or not anyone
	// writes through it).
	r.phase(fmt.Sprintf("pivot onto %s %s: block-job-complete to BLOCK_JOB_COMPLETED %s, the switch %s (%s stays read-write, %s too until blockdev-del)",
		bottom.name(), when, ms(pivot), ms(log.between(id, "pending", "concluded")), bottom.name(), snap.name()))
	r.printf("          %s\n", log.line(id))
	if err := log.check(id, "created", "running", "ready", "waiting", "pending", "concluded", "null"); err != nil {
		return err
	}
	began = time.Now()
	if err := blockdevDel(c, snap); err != nil {
		return err
	}
	r.phase(fmt.Sprintf("blockdev-del %s (%s)", snap.name(), ms(time.Since(began))))
	return nil
}

// waitJob waits for job id's event name, or its end.
func waitJob(c *qmpclient.Client, id, name string) (qmpclient.Event, error) {
	e, err := c.EventFunc(jobWait, func(e qmpclient.Event) bool {
		if e.Str("device") != id && e.Str("id") != id {
			return false
		}
		return e.Name == name || e.Name == "BLOCK_JOB_COMPLETED" || e.Name == "BLOCK_JOB_CANCELLED"
	})
	if err != nil {
		return e, fmt.Errorf("job %s: %w", id, err)
	}
	if e.Name != name {
		msg := e.Str("error")
		if msg == "" {
			msg = "cancelled"
		}
		return e, fmt.Errorf("job %s ended (%s) before %s: %s", id, e.Name, name, msg)
	}
	return e, nil
}

// waitGone waits for job id's last status change (null: dismissed),
// which follows BLOCK_JOB_COMPLETED.
func waitGone(c *qmpclient.Client, id string) error {
	_, err := c.EventFunc(jobWait, func(e qmpclient.Event) bool {
		return e.Name == "JOB_STATUS_CHANGE" && e.Str("id") == id && e.Str("status") == "null"
	})
	if err != nil {
		return fmt.Errorf("job %s: %w", id, err)
	}
	return nil
}

// cancelJob ends a job a failed step leaves, so that its nodes can go.
func cancelJob(c *qmpclient.Client, id string) {
	if _, err := c.Execute("block-job-cancel", map[string]any{"device": id, "force": true}); err != nil {
		return
	}
	waitGone(c, id)
}

// num reads a JSON number (0 if it is none).
func num(v any) int64 {
	n, _ := v.(json.Number)
	i, err := n.Int64()
	if err != nil {
		f, _ := n.Float64()
		return int64(f)
	}
	return i
}
