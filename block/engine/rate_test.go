package engine

import (
	"context"
	"errors"
	"testing"
	"time"
)

// fakeClock advances only when slept on.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }
func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	c.t = c.t.Add(d)
	return ctx.Err()
}

// TestRate: copies through a Rate take, on its clock, the time their
// bytes take at its speed (within one slice), whatever their size.
func TestRate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		speed, chunk, total int64
	}{
		{1 << 20, 64 << 10, 10 << 20},
		{1 << 20, 2 << 20, 10 << 20},
		{10 << 20, 4096, 5 << 20},
		{1000, 512, 100_000},
	} {
		c := &fakeClock{t: time.Unix(1000, 0)}
		r := &Rate{Now: c.now, Sleep: c.sleep}
		r.SetSpeed(tc.speed)
		start := c.t
		for sent := int64(0); sent < tc.total; sent += tc.chunk {
			if err := r.Wait(context.Background(), tc.chunk); err != nil {
				t.Fatal(err)
			}
		}
		took := c.t.Sub(start)
		want := time.Duration(float64(tc.total) / float64(tc.speed) * float64(time.Second))
		if took < want-2*rateSlice-time.Duration(float64(tc.chunk)/float64(tc.speed)*float64(time.Second)) || took > want+rateSlice {
			t.Errorf("speed %d, chunks of %d: %d bytes took %v, want about %v", tc.speed, tc.chunk, tc.total, took, want)
		}
	}
}

func TestRateUnlimitedAndCancelled(t *testing.T) {
	t.Parallel()
	c := &fakeClock{t: time.Unix(1000, 0)}
	r := &Rate{Now: c.now, Sleep: c.sleep}
	for range 100 {
		if err := r.Wait(context.Background(), 1<<30); err != nil {
			t.Fatal(err)
		}
	}
	if c.t != time.Unix(1000, 0) {
		t.Errorf("speed 0 waited %v", c.t.Sub(time.Unix(1000, 0)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.SetSpeed(1)
	if err := r.Wait(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	// The real clock: a cancelled wait returns at once.
	real := NewRate(1)
	real.Wait(context.Background(), 10)
	if err := real.Wait(ctx, 10); !errors.Is(err, context.Canceled) {
		t.Errorf("real clock, cancelled: %v", err)
	}
}
