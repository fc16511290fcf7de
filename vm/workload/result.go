package workload

import (
	"fmt"
	"strings"
	"time"
)

// Latency is a direction's completion latency distribution.
type Latency struct {
	Min, Max, Mean      time.Duration
	P50, P90, P99, P999 time.Duration
}

// DirResult is what one direction (read, write, or the read-back of a
// verifying write workload) did.
type DirResult struct {
	IOs   int64
	Bytes int64
	IOPS  float64
	BW    float64 // bytes per second
	Lat   Latency
}

// Result is what a run measured and found.
type Result struct {
	Spec    Spec
	Elapsed time.Duration
	Read    DirResult
	Write   DirResult
	Verify  DirResult // the read-back pass of a verifying write workload
	// Sectors checked against a stamp, and read where nothing was known
	// (never written by a workload, and not stamped).
	Checked, Unverified int64
	// TornRacing counts sectors found torn by a read that raced a write
	// to them (not an error: see job.finish).
	TornRacing    int64
	Mismatches    []Mismatch // the first ones
	MismatchCount int64
	IOErrors      int64
	FirstIOError  string
	TimedOut      bool
}

// OK tells whether every request succeeded and every check held.
func (r *Result) OK() bool { return r.MismatchCount == 0 && r.IOErrors == 0 && !r.TimedOut }

func collect(spec Spec, jobs []*job, elapsed time.Duration) *Result {
	r := &Result{Spec: spec, Elapsed: elapsed}
	var rh, wh, vh hist
	for _, j := range jobs {
		rh.merge(&j.reads.lat)
		wh.merge(&j.writes.lat)
		vh.merge(&j.verifies.lat)
		r.Read.Bytes += j.reads.bytes.Load()
		r.Write.Bytes += j.writes.bytes.Load()
		r.Verify.Bytes += j.verifies.bytes.Load()
		r.Checked += j.checked.Load()
		r.Unverified += j.unverified.Load()
		r.TornRacing += j.tornRacing
		r.MismatchCount += j.mismatchCount
		for _, m := range j.mismatches {
			if len(r.Mismatches) < maxMismatches {
				r.Mismatches = append(r.Mismatches, m)
			}
		}
		r.IOErrors += j.ioErrors
		if r.FirstIOError == "" {
			r.FirstIOError = j.firstIOError
		}
		r.TimedOut = r.TimedOut || j.timedOut
	}
	secs := elapsed.Seconds()
	fill := func(d *DirResult, h *hist) {
		d.IOs = h.n
		if secs > 0 {
			d.IOPS = float64(d.IOs) / secs
			d.BW = float64(d.Bytes) / secs
		}
		if h.n > 0 {
			d.Lat = Latency{Min: time.Duration(h.min), Max: time.Duration(h.max), Mean: time.Duration(h.sum / h.n),
				P50: h.quantile(0.5), P90: h.quantile(0.9), P99: h.quantile(0.99), P999: h.quantile(0.999)}
		}
	}
	fill(&r.Read, &rh)
	fill(&r.Write, &wh)
	fill(&r.Verify, &vh)
	return r
}

// String is the result in fio's manner.
func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "workload: %s\n", r.Spec)
	for _, d := range []struct {
		name string
		d    DirResult
	}{{"read", r.Read}, {"write", r.Write}, {"verify", r.Verify}} {
		if d.d.IOs == 0 {
			continue
		}
		fmt.Fprintf(&b, "  %s: IOPS=%s, BW=%s/s (%s/%dmsec)\n", d.name, kilo(d.d.IOPS), mib(d.d.BW), mib(float64(d.d.Bytes)), r.Elapsed.Milliseconds())
		l := d.d.Lat
		fmt.Fprintf(&b, "    lat (usec): min=%s, max=%s, avg=%s\n", usec(l.Min), usec(l.Max), usec(l.Mean))
		fmt.Fprintf(&b, "    lat percentiles (usec): 50.00th=[%s], 90.00th=[%s], 99.00th=[%s], 99.90th=[%s]\n",
			usec(l.P50), usec(l.P90), usec(l.P99), usec(l.P999))
	}
	if r.Spec.Verify {
		fmt.Fprintf(&b, "  verify: %d sectors checked, %d unverified, %d mismatches\n", r.Checked, r.Unverified, r.MismatchCount)
		for _, m := range r.Mismatches {
			fmt.Fprintf(&b, "    %s\n", m)
		}
	}
	if r.IOErrors > 0 {
		fmt.Fprintf(&b, "  errors: %d (first: %s)\n", r.IOErrors, r.FirstIOError)
	}
	return b.String()
}

func kilo(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.1fk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}

func mib(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.1fGiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1fMiB", v/(1<<20))
	}
	return fmt.Sprintf("%.1fKiB", v/(1<<10))
}

func usec(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/1e3) }

// Progress is a run's state at one moment.
type Progress struct {
	Jobs                int
	Elapsed             time.Duration
	Percent             float64 // of the run's time or requests
	ReadIOPS, WriteIOPS float64 // over the last interval
	ReadBW, WriteBW     float64
	ETA                 time.Duration
}

type progressSample struct {
	at                            time.Time
	reads, writes, rbytes, wbytes int64
}

func progress(spec Spec, jobs []*job, began, now time.Time, last *progressSample) Progress {
	var cur progressSample
	cur.at = now
	var total, doneIOs int64
	for _, j := range jobs {
		cur.reads += j.reads.ios.Load() + j.verifies.ios.Load()
		cur.writes += j.writes.ios.Load()
		cur.rbytes += j.reads.bytes.Load() + j.verifies.bytes.Load()
		cur.wbytes += j.writes.bytes.Load()
	}
	for _, j := range jobs {
		n := spec.IOSize
		if n == 0 {
			n = j.size
		}
		total += max(n/spec.BS, 1)
		if spec.Verify && !spec.Reads() {
			total += j.size / spec.BS
		}
	}
	doneIOs = cur.reads + cur.writes
	if last.at.IsZero() {
		last.at = began
	}
	p := Progress{Jobs: len(jobs), Elapsed: now.Sub(began)}
	if dt := now.Sub(last.at).Seconds(); dt > 0 {
		p.ReadIOPS = float64(cur.reads-last.reads) / dt
		p.WriteIOPS = float64(cur.writes-last.writes) / dt
		p.ReadBW = float64(cur.rbytes-last.rbytes) / dt
		p.WriteBW = float64(cur.wbytes-last.wbytes) / dt
	}
	if spec.Runtime > 0 {
		p.Percent = 100 * min(1, p.Elapsed.Seconds()/spec.Runtime.Seconds())
		p.ETA = max(spec.Runtime-p.Elapsed, 0)
	} else if total > 0 {
		p.Percent = 100 * float64(doneIOs) / float64(total)
		if doneIOs > 0 {
			p.ETA = time.Duration(float64(p.Elapsed) * float64(total-doneIOs) / float64(doneIOs))
		}
	}
	*last = cur
	return p
}

// String is the progress in fio's status-line manner.
func (p Progress) String() string {
	eta := p.ETA.Round(time.Second)
	return fmt.Sprintf("Jobs: %d: [%.1f%%][r=%s/s,w=%s/s][r=%s,w=%s IOPS][eta %02dm:%02ds]",
		p.Jobs, p.Percent, mib(p.ReadBW), mib(p.WriteBW), kilo(p.ReadIOPS), kilo(p.WriteIOPS),
		int(eta.Minutes()), int(eta.Seconds())%60)
}
