package workload

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"minivmm/vm/blkdriver"
)

// Target is one disk a workload runs on: the guest's driver for it, and
// the shadow of what it holds.
type Target struct {
	Name   string
	Disk   *blkdriver.Disk
	Shadow *Shadow
}

// Options are how a run is hosted.
type Options struct {
	// Progress, if set, gets a report every ProgressEvery (default 1s).
	Progress      func(Progress)
	ProgressEvery time.Duration
	// Gate, if set, is called by a job before each request: it blocks
	// while the guest's vCPUs are stopped, and says false if the run
	// was cancelled meanwhile.
	Gate func() bool
	// Timeout is how long a request may stay in flight before the run
	// gives up on it (default 30s): a lost completion is an error, not
	// a hang.
	Timeout time.Duration
	// Stopped, if set, says whether the machine is stopped: the
	// timeout does not run out while it is (requests wait for cont).
	Stopped func() bool
	// Cancel, when closed, ends the run early; the requests in flight
	// complete first.
	Cancel <-chan struct{}
}

// ErrTimeout is a request the device did not complete within the timeout.
var ErrTimeout = errors.New("workload: request timed out")

// maxMismatches is how many mismatches a result lists; it counts them all.
const maxMismatches = 16

// Run runs spec on every target (numjobs jobs each) and returns what it
// measured. An error is a workload that could not start (a write to a
// read-only disk, a region past the end, no guest memory); IO errors and
// verify mismatches are in the result.
func Run(spec Spec, targets []Target, o Options) (*Result, error) {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = time.Second
	}
	var jobs []*job
	freeAll := func() {
		for _, j := range jobs {
			j.free()
		}
	}
	for _, t := range targets {
		capacity := t.Disk.Capacity()
		if spec.Writes() && t.Disk.ReadOnly() {
			freeAll()
			return nil, fmt.Errorf("workload: device '%s' is read-only", t.Name)
		}
		start, size := spec.Offset, spec.Size
		if size == 0 {
			size = capacity - start
		}
		size -= size % spec.BS
		if start%blkdriver.SectorSize != 0 || start < 0 || size < spec.BS || start+size > capacity {
			freeAll()
			return nil, fmt.Errorf("workload: device '%s' (%d bytes) has no %d-byte blocks from offset %d to %d",
				t.Name, capacity, spec.BS, start, start+size)
		}
		qs := t.Disk.Queues()
		for i := 0; i < spec.NumJobs; i++ {
			j, err := newJob(spec, t, qs[i%len(qs)], len(jobs), start, size)
			if err != nil {
				freeAll()
				return nil, err
			}
			jobs = append(jobs, j)
		}
	}
	defer freeAll()
	cancel := make(chan struct{})
	var cancelOnce sync.Once
	stop := func() {
		cancelOnce.Do(func() { close(cancel) })
		for _, t := range targets {
			t.Shadow.Wake()
		}
	}
	began := time.Now()
	var deadline <-chan time.Time
	if spec.Runtime > 0 {
		tm := time.NewTimer(spec.Runtime)
		defer tm.Stop()
		deadline = tm.C
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j.run(cancel, o.Gate, o.Stopped, o.Timeout)
		}()
	}
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	tick := time.NewTicker(o.ProgressEvery)
	defer tick.Stop()
	var last progressSample
	for done := false; !done; {
		select {
		case <-finished:
			done = true
		case <-deadline:
			stop()
		case <-o.Cancel:
			stop()
		case now := <-tick.C:
			if o.Progress != nil {
				o.Progress(progress(spec, jobs, began, now, &last))
			}
		}
	}
	stop()
	return collect(spec, jobs, time.Since(began)), nil
}

// job is one fio job: a vCPU issuing requests on one queue.
type job struct {
	spec        Spec
	t           Target
	q           *blkdriver.Queue
	start, size int64
	rng         *rand.Rand
	slots       []*slot
	done        chan *slot
	seq         int64 // next sequential offset, from start
	left        int64 // requests left in the main phase (no runtime)
	verifyLeft  int64 // requests left in the read-back phase
	verifySeq   int64

	reads, writes, verifies dirStats
	checked, unverified     atomic.Int64 // sectors
	tornRacing              int64        // sectors found torn while a write to them was in flight
	mismatches              []Mismatch
	mismatchCount           int64
	ioErrors                int64
	firstIOError            string
	timedOut                bool
}

type dirStats struct {
	ios, bytes atomic.Int64
	lat        hist
}

type slot struct {
	j      *job
	req    blkdriver.Request
	buf    blkdriver.Region
	write  bool
	verify bool // read-back phase
	off    int64
	gen    uint32
	expect [][2]uint32
	start  time.Time
	lat    time.Duration
}

func newJob(spec Spec, t Target, q *blkdriver.Queue, index int, start, size int64) (*job, error) {
	j := &job{spec: spec, t: t, q: q, start: start, size: size,
		rng:  rand.New(rand.NewPCG(spec.Seed, uint64(index))),
		done: make(chan *slot, spec.IODepth)}
	if spec.Runtime == 0 {
		n := spec.IOSize
		if n == 0 {
			n = size
		}
		j.left = max(n/spec.BS, 1)
		if spec.Verify && !spec.Reads() {
			j.verifyLeft = size / spec.BS
		}
	} else if spec.Verify && !spec.Reads() {
		j.verifyLeft = size / spec.BS
	}
	mem := t.Disk.Memory()
	sectors := spec.BS / blkdriver.SectorSize
	for range spec.IODepth {
		buf, err := mem.Alloc(int(spec.BS), 4096)
		if err != nil {
			j.free()
			return nil, fmt.Errorf("workload: device '%s': guest memory for %d buffers of %d bytes: %w", t.Name, spec.IODepth, spec.BS, err)
		}
		s := &slot{j: j, buf: buf, expect: make([][2]uint32, sectors)}
		s.req.Done = s.complete
		j.slots = append(j.slots, s)
	}
	return j, nil
}

func (j *job) free() {
	for _, s := range j.slots {
		j.t.Disk.Memory().Free(s.buf)
	}
	j.slots = nil
}

// complete runs on the queue's interrupt goroutine: it ends the request's
// hold on the shadow (so that other jobs' writes proceed whatever this
// job is doing) and hands the slot to the job.
func (s *slot) complete(r *blkdriver.Request) {
	s.lat = time.Since(s.start)
	sectors := int64(len(s.buf.B)) / blkdriver.SectorSize
	sec := s.off / blkdriver.SectorSize
	if s.write {
		s.j.t.Shadow.EndWrite(sec, sectors, r.Status == blkdriver.StatusOK)
	} else {
		s.j.t.Shadow.EndRead(sec, sectors)
	}
	s.j.done <- s
}

// next prepares s for the job's next request; false when there is none.
func (j *job) next(s *slot, cancel <-chan struct{}) bool {
	select {
	case <-cancel:
		return false
	default:
	}
	sp := j.spec
	bs := sp.BS
	blocks := j.size / bs
	s.verify = false
	switch {
	case sp.Runtime > 0 || j.left > 0:
		if sp.Runtime == 0 {
			j.left--
		}
		s.write = sp.Writes() && (!sp.Reads() || j.rng.IntN(100) >= sp.RWMixRead)
		if sp.Random() {
			s.off = j.start + j.rng.Int64N(blocks)*bs
		} else {
			s.off = j.start + j.seq
			j.seq = (j.seq + bs) % (blocks * bs)
		}
	case j.verifyLeft > 0:
		j.verifyLeft--
		s.write, s.verify = false, true
		s.off = j.start + j.verifySeq
		j.verifySeq += bs
	default:
		return false
	}
	sectors := bs / blkdriver.SectorSize
	sh := j.t.Shadow
	if s.write {
		s.gen = 0
		if sp.Random() {
			// Another block rather than a wait, where this one is busy.
			for try := 0; try < 8 && s.gen == 0; try++ {
				if try > 0 {
					s.off = j.start + j.rng.Int64N(blocks)*bs
				}
				s.gen = sh.TryWrite(s.off/blkdriver.SectorSize, sectors)
			}
		}
		if s.gen == 0 {
			if s.gen = sh.Write(s.off/blkdriver.SectorSize, sectors, cancel); s.gen == 0 {
				return false
			}
		}
		stamp(s.buf.B, s.off, s.gen)
		s.req = blkdriver.Request{Type: blkdriver.TypeOut, Done: s.complete}
	} else {
		sh.Read(s.off/blkdriver.SectorSize, sectors, s.expect)
		s.req = blkdriver.Request{Type: blkdriver.TypeIn, Done: s.complete}
	}
	s.req.Sector = uint64(s.off / blkdriver.SectorSize)
	s.req.Data = []blkdriver.Region{s.buf}
	return true
}

// errCancelled is a request not submitted because the run ended while
// the vCPUs were stopped; it is not an IO error.
var errCancelled = errors.New("workload: cancelled")

func (j *job) submit(s *slot, gate func() bool) error {
	if gate != nil && !gate() {
		return errCancelled
	}
	s.start = time.Now()
	return j.q.Submit(&s.req)
}

// run keeps iodepth requests in flight until the job's work is done or
// it is cancelled, then waits for the ones in flight.
func (j *job) run(cancel <-chan struct{}, gate func() bool, stopped func() bool, timeout time.Duration) {
	inflight := 0
	for _, s := range j.slots {
		if !j.next(s, cancel) {
			break
		}
		if err := j.submit(s, gate); err != nil {
			j.abort(s, err)
			break
		}
		inflight++
	}
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for inflight > 0 {
		tm.Reset(timeout)
		select {
		case s := <-j.done:
			inflight--
			j.finish(s)
			if j.next(s, cancel) {
				if err := j.submit(s, gate); err != nil {
					j.abort(s, err)
					continue
				}
				inflight++
			}
		case <-tm.C:
			if stopped != nil && stopped() {
				continue // a stopped machine completes nothing until cont
			}
			// The requests still in flight hold their buffers and
			// shadow claims: the job cannot reuse them, so it stops.
			j.timedOut = true
			j.ioErrors += int64(inflight)
			if j.firstIOError == "" {
				j.firstIOError = fmt.Sprintf("%v after %v on queue %d", ErrTimeout, timeout, j.q.Index())
			}
			return
		}
	}
}

// abort undoes next for a request that could not be submitted.
func (j *job) abort(s *slot, err error) {
	sectors := j.spec.BS / blkdriver.SectorSize
	if s.write {
		j.t.Shadow.EndWrite(s.off/blkdriver.SectorSize, sectors, false)
	} else {
		j.t.Shadow.EndRead(s.off/blkdriver.SectorSize, sectors)
	}
	if err == errCancelled {
		return
	}
	j.ioErrors++
	if j.firstIOError == "" {
		j.firstIOError = err.Error()
	}
}

// finish accounts for a completed request and verifies what it read.
func (j *job) finish(s *slot) {
	if s.req.Status != blkdriver.StatusOK {
		j.ioErrors++
		if j.firstIOError == "" {
			j.firstIOError = (&blkdriver.StatusError{Type: s.req.Type, Sector: s.req.Sector, Status: s.req.Status}).Error()
		}
		return
	}
	d := &j.reads
	switch {
	case s.write:
		d = &j.writes
	case s.verify:
		d = &j.verifies
	}
	d.lat.add(s.lat)
	d.bytes.Add(int64(len(s.buf.B)))
	d.ios.Add(1)
	if s.write || (!j.spec.Verify && !s.verify) {
		return
	}
	var checked, unverified int64
	for i := range s.expect {
		off := s.off + int64(i)*stampSize
		sec := s.buf.B[i*stampSize : (i+1)*stampSize]
		m, ok, verified := check(sec, off, s.expect[i][0], s.expect[i][1])
		if !verified {
			unverified++
			continue
		}
		checked++
		if ok {
			continue
		}
		if m.Kind == "corrupt" && s.expect[i][1] != 0 {
			// Read while a write to it was in flight: a file read
			// racing a write may see part of each, which is not a
			// fault of either; a torn write that completed is still
			// caught by the next read.
			j.tornRacing++
			continue
		}
		m.Device = j.t.Name
		j.mismatchCount++
		if len(j.mismatches) < maxMismatches {
			j.mismatches = append(j.mismatches, m)
		}
	}
	j.checked.Add(checked)
	j.unverified.Add(unverified)
}
