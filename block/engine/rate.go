package engine

import (
	"context"
	"sync"
	"time"
)

// rateSlice is how often the rate's quota renews (QEMU's
// BLOCK_JOB_SLICE_TIME): short enough that a job does not stall, long
// enough that a few large copies do not each pay a sleep.
const rateSlice = 100 * time.Millisecond

// Rate is a Limiter for a job's speed, as QEMU's ratelimit does it: each
// 100 ms slice lets through a tenth of a second's bytes; a copy that goes
// over waits for as many slices as it used up. A speed of 0 is no limit.
// It is safe for concurrent use, and SetSpeed may change it while a
// copy runs (block-job-set-speed).
type Rate struct {
	// Now and Sleep are the clock; nil means the real one (tests inject
	// theirs).
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error

	mu         sync.Mutex
	speed      int64 // bytes per second
	sliceEnd   time.Time
	dispatched int64 // bytes let through in the current slice
}

// NewRate is a Rate of speed bytes a second.
func NewRate(speed int64) *Rate { return &Rate{speed: speed} }

// SetSpeed changes the rate; 0 removes the limit.
func (r *Rate) SetSpeed(speed int64) {
	r.mu.Lock()
	r.speed = speed
	r.mu.Unlock()
}

// Wait returns once n more bytes may go, or with ctx's error.
func (r *Rate) Wait(ctx context.Context, n int64) error {
	d := r.delay(n)
	if d <= 0 {
		return ctx.Err()
	}
	if r.Sleep != nil {
		return r.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// delay accounts n bytes and says how long to wait before they go.
func (r *Rate) delay(n int64) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.speed <= 0 {
		return 0
	}
	now := time.Now()
	if r.Now != nil {
		now = r.Now()
	}
	quota := max(1, r.speed*int64(rateSlice)/int64(time.Second))
	if !now.Before(r.sliceEnd) {
		r.sliceEnd, r.dispatched = now.Add(rateSlice), 0
	}
	// Like QEMU, a copy is let through when its slice still had room,
	// and the slices it overran are paid for by the copies after it.
	wait := time.Duration(0)
	if r.dispatched >= quota {
		over := r.dispatched / quota
		wait = r.sliceEnd.Sub(now) + time.Duration(over-1)*rateSlice
		r.sliceEnd = r.sliceEnd.Add(time.Duration(over) * rateSlice)
		r.dispatched -= over * quota
	}
	r.dispatched += n
	return wait
}
