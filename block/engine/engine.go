// Package engine holds the block layer's copy engines: commit, rebase's
// copy and convert. They work on open nodes (never paths), so that the
// offline tools (minivmm img) and live block jobs run the same loops over
// the same graph: a job passes its context (cancellation), a progress
// callback and a rate limiter; a tool renders the typed errors in QEMU's
// words.
package engine

import (
	"context"
	"fmt"
)

// Limiter holds a copy back to a rate (a job's speed): Wait returns once n
// more bytes may be copied, or with ctx's error.
type Limiter interface {
	Wait(ctx context.Context, n int64) error
}

// Progress is told, after each step, how much of the work is done out of
// a total; both are in the engine's own units (bytes unless an engine says
// otherwise), and total may change as the engine learns more.
type Progress func(done, total int64)

// Options are what every engine takes.
type Options struct {
	Progress Progress // nil: none
	Limiter  Limiter  // nil: no limit
	// Retry, if set, is asked about a failed read or write (a job's
	// on-error policy): true copies the range again (QEMU's commit and
	// stream do so for "stop" once resumed, and for "ignore"), false
	// fails the copy with the error.
	Retry func(err *Error) bool
}

// retry tells whether a failed step is tried again.
func (o *Options) retry(err error) bool {
	e, ok := err.(*Error)
	return ok && o.Retry != nil && o.Retry(e)
}

func (o *Options) progress(done, total int64) {
	if o.Progress != nil {
		o.Progress(done, total)
	}
}

// wait is the rate limit and cancellation point of each copy step.
func (o *Options) wait(ctx context.Context, n int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if o.Limiter != nil {
		return o.Limiter.Wait(ctx, n)
	}
	return nil
}

// Op names what an engine was doing when it failed.
type Op string

const (
	OpStatus Op = "block status"
	OpRead   Op = "read"
	OpWrite  Op = "write"
	OpFlush  Op = "flush"
	OpResize Op = "resize"
)

// Error is an engine's failed request: what, at which offset of the node
// it went to, and the block layer's error beneath.
type Error struct {
	Op  Op
	Off int64
	Err error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s at offset %d: %v", e.Op, e.Off, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

func fail(op Op, off int64, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Op: op, Off: off, Err: err}
}
