package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"minivmm/block"
)

// The mirror engine: what blockdev-mirror and active block-commit run.
// A dirty bitmap on the source records every write that completes; the
// engine first marks what the sync mode says must be copied, then copies
// dirty ranges (clearing their bits before reading them, so that a write
// ending after the clear marks them again) until none is left: converged.
// From then on it keeps copying new writes, until asked to stop; the
// last check that nothing is left happens with the source held still
// (its backends' requests ended and new ones held back), and the engine
// returns with it held, so that the caller switches the source's users
// over to a target that is exactly what they saw.

// MirrorSync is what the initial copy takes (QMP's MirrorSyncMode).
type MirrorSync int

const (
	// SyncFull copies everything the source's chain shows.
	SyncFull MirrorSync = iota
	// SyncTop copies what the source's own layer allocates (the target
	// has the same backing file).
	SyncTop
	// SyncNone copies only what is written from now on.
	SyncNone
)

// Defaults as QEMU's mirror picks them.
const (
	MirrorDefaultBufSize = 16 << 20
	mirrorMaxChunk       = 1 << 20 // QEMU's MAX_IO_BYTES
	mirrorMaxOps         = 16      // QEMU's MAX_IN_FLIGHT
	mirrorIdlePoll       = 5 * time.Millisecond
)

// MirrorOptions configure a mirror.
type MirrorOptions struct {
	Options
	Sync MirrorSync
	// Base, for SyncFull, stops the initial copy above it: only what the
	// layers above Base allocate is copied (active commit, whose target
	// is Base). nil: the whole chain. SyncTop uses the source's backing.
	Base *block.Node
	// Granularity is the dirty bitmap's (a power of two, 512 B..64 MiB);
	// BufSize the most bytes in flight. 0: the defaults.
	Granularity int64
	BufSize     int64
	// Ready is called once, when source and target first hold the same
	// (QEMU's BLOCK_JOB_READY).
	Ready func()
	// Stop says, once converged, whether the caller wants the mirror to
	// end (block-job-complete, or a cancel of a ready job).
	Stop func() bool
	// Hold quiesces the source (its users' requests end, new ones wait)
	// until release is called; the engine calls it for the final check.
	// nil: the source is drained (Node.Drain).
	Hold func() (release func())
	// CopyUnderHold says Hold leaves the source itself readable (it
	// stops the source's users — through a filter above it — not the
	// source): what was written between the last check and the hold is
	// then copied while held, so a guest that never pauses cannot keep
	// block-job-complete waiting (QEMU's background mode retries until
	// it finds a quiet moment, which a busy guest may never give).
	CopyUnderHold bool
	// PausePoint, if set, is called between steps (a paused job waits
	// there); its error ends the mirror.
	PausePoint func(ctx context.Context) error
	// OnError decides about a failed copy: nil retries it later (the
	// range is marked dirty again: on-error=ignore, or a job that was
	// stopped and resumed), an error ends the mirror with it.
	OnError func(source bool, err error) error
}

// Mirror copies a source node into a target while the source is
// written. Make it with NewMirror, run it with Run, Close it.
type Mirror struct {
	src, dst *block.Node
	o        MirrorOptions
	bm       *block.DirtyBitmap
	chunk    int64

	kick chan struct{} // wakes an idle loop (Kick)
	bufs sync.Pool     // *[]byte of chunk bytes: a copy's buffer, reused

	mu       sync.Mutex
	inflight []span // ranges being copied
	inBytes  int64
	done     int64 // bytes copied
	writes   int64 // copies that ended (each may have written the target)
	errs     []opError
	opDone   chan struct{} // signalled when an op ends
}

type span struct{ off, n int64 }

type opError struct {
	span
	source bool
	err    error
}

// NewMirror attaches a dirty bitmap to src: writes that complete from
// now on will be copied. Callers drain src around NewMirror if a write
// in flight must not be missed (the initial copy covers what the sync
// mode asks for anyway).
func NewMirror(src, dst *block.Node, o MirrorOptions) (*Mirror, error) {
	if dst.Length() < src.Length() {
		return nil, fmt.Errorf("target '%s' is %d bytes, shorter than source '%s' (%d bytes)", dst.Name(), dst.Length(), src.Name(), src.Length())
	}
	if o.Granularity == 0 {
		o.Granularity = 64 << 10
	}
	if o.BufSize == 0 {
		o.BufSize = MirrorDefaultBufSize
	}
	bm, err := block.NewDirtyBitmap(src.Length(), o.Granularity)
	if err != nil {
		return nil, err
	}
	chunk := max(o.Granularity, min(mirrorMaxChunk, o.BufSize))
	m := &Mirror{src: src, dst: dst, o: o, bm: bm, chunk: chunk,
		kick: make(chan struct{}, 1), opDone: make(chan struct{}, 1)}
	src.AddDirtyBitmap(bm)
	return m, nil
}

// Close detaches the bitmap.
func (m *Mirror) Close() { m.src.RemoveDirtyBitmap(m.bm) }

// Kick wakes a converged mirror that waits for writes, to look at Stop
// at once (block-job-complete).
func (m *Mirror) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run copies until the source converges and Stop says to end, and then
// returns with the source held (release it after switching, or to let
// it go on without a switch). On error or cancellation it returns with
// no copy running and the source not held.
func (m *Mirror) Run(ctx context.Context) (release func(), err error) {
	defer func() {
		if err != nil {
			m.waitAll()
		}
	}()
	if err := m.initialDirty(ctx); err != nil {
		return nil, err
	}
	ready := false
	var cursor int64
	flushed := int64(-1) // m.writes at the last flush of the target
	for {
		if err := m.takeError(); err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if m.o.PausePoint != nil {
			if err := m.o.PausePoint(ctx); err != nil {
				return nil, err
			}
		}
		m.progress()
		if ready && m.o.CopyUnderHold && m.o.Stop != nil && m.bm.Count() <= m.o.BufSize && m.o.Stop() {
			// Complete under a guest that keeps writing: what is dirty
			// is no more than one buffer, so copy it under the hold
			// rather than chase a convergence the guest may not allow.
			m.waitAll()
			if err := m.takeError(); err != nil {
				return nil, err
			}
			if release, done, err := m.finishHeld(ctx); done {
				return release, err
			}
			continue
		}
		start, n := m.bm.NextDirty(cursor, m.chunk)
		if n == 0 && cursor > 0 {
			start, n = m.bm.NextDirty(0, m.chunk)
		}
		if n > 0 {
			if err := m.startOp(ctx, start, n, true); err != nil {
				return nil, err
			}
			cursor = start + n
			continue
		}
		if m.busy() {
			m.waitOne(ctx)
			continue
		}
		// Converged: nothing dirty, nothing in flight. The target is
		// flushed unless no copy has ended since it last was: an idle
		// ready mirror, and block-job-complete after it, pay no flush.
		if w := m.copiesEnded(); w != flushed {
			if err := m.dst.Flush(); err != nil {
				if err := m.failed(false, fail(OpFlush, 0, err)); err != nil {
					return nil, err
				}
				continue
			}
			flushed = w
		}
		if !ready {
			ready = true
			if m.o.Ready != nil {
				m.o.Ready()
			}
		}
		if m.o.Stop != nil && m.o.Stop() {
			release := m.hold()
			if m.bm.Count() == 0 {
				// Nothing was written since the flush: the target is the
				// source, durably.
				return release, nil
			}
			release()
			if m.o.CopyUnderHold {
				if release, done, err := m.finishHeld(ctx); done {
					return release, err
				}
			}
			continue
		}
		select {
		case <-ctx.Done():
		case <-m.kick:
		case <-time.After(mirrorIdlePoll):
		}
	}
}

func (m *Mirror) wait(ctx context.Context, n int64, limit bool) error {
	if limit {
		return m.o.wait(ctx, n)
	}
	return ctx.Err()
}

// errCopyFailed says a copy under the hold failed (its error is in
// m.errs, for the loop's takeError) or the source changed meanwhile.
var errCopyFailed = errors.New("mirror: a copy under the hold failed")

// finishHeld holds the source and copies what is dirty (copyHeld).
// done: Run returns release and err (release non-nil on success); else
// the loop goes on (a failed copy is in m.errs for its error policy, a
// failed flush went to the policy here).
func (m *Mirror) finishHeld(ctx context.Context) (release func(), done bool, err error) {
	release = m.hold()
	err = m.copyHeld(ctx)
	if err == nil {
		return release, true, nil
	}
	release()
	if ctx.Err() != nil {
		return nil, true, ctx.Err()
	}
	if !errors.Is(err, errCopyFailed) {
		if err := m.failed(false, err); err != nil {
			return nil, true, err
		}
	}
	return nil, false, nil
}

// copyHeld copies every dirty range while the source's users are held,
// then flushes the target: afterwards the target is the source, durably.
func (m *Mirror) copyHeld(ctx context.Context) error {
	for {
		start, n := m.bm.NextDirty(0, m.chunk)
		if n == 0 {
			if !m.busy() {
				break
			}
			if err := m.waitOne(ctx); err != nil {
				m.waitAll()
				return err
			}
			continue
		}
		if err := m.startOp(ctx, start, n, false); err != nil {
			m.waitAll()
			return err
		}
	}
	m.mu.Lock()
	failed := len(m.errs) > 0
	m.mu.Unlock()
	if failed || m.bm.Count() > 0 {
		return errCopyFailed
	}
	if err := m.dst.Flush(); err != nil {
		return fail(OpFlush, 0, err)
	}
	return nil
}

func (m *Mirror) hold() func() {
	if m.o.Hold != nil {
		return m.o.Hold()
	}
	return m.src.Drain()
}

// initialDirty marks what the sync mode copies: the ranges the layers
// above the base allocate; everything when there is no base.
func (m *Mirror) initialDirty(ctx context.Context) error {
	base := m.o.Base
	switch m.o.Sync {
	case SyncNone:
		return nil
	case SyncTop:
		base = m.src.Child("backing")
	}
	if base == nil {
		// As QEMU: with nothing below to stop at, the bottom layer
		// counts as allocating all it reads (zeroes too), so all of the
		// source is to go; ranges reading as zeroes on both sides cost
		// no write.
		m.bm.SetAll()
		m.progress()
		return nil
	}
	length := m.src.Length()
	for off := int64(0); off < length; {
		if err := ctx.Err(); err != nil {
			return err
		}
		alloc, n, err := block.AllocatedAbove(m.src, base, off, min(1<<30, length-off))
		if err != nil {
			return fail(OpStatus, off, err)
		}
		if alloc {
			m.bm.Set(off, n)
		}
		off += n
	}
	m.progress()
	return nil
}

func (m *Mirror) progress() {
	m.mu.Lock()
	done, left := m.done, m.bm.Count()+m.inBytes
	m.mu.Unlock()
	m.o.progress(done, done+left)
}

// startOp copies [off, off+n) in the background, once no copy in flight
// overlaps it and the buffer has room; its bits are cleared first.
// limit: wait for the rate limiter first (not under a hold, where the
// guest waits too).
func (m *Mirror) startOp(ctx context.Context, off, n int64, limit bool) error {
	for {
		m.mu.Lock()
		overlap := false
		for _, s := range m.inflight {
			if s.off < off+n && off < s.off+s.n {
				overlap = true
				break
			}
		}
		room := len(m.inflight) < mirrorMaxOps && (m.inBytes == 0 || m.inBytes+n <= m.o.BufSize)
		if !overlap && room {
			m.bm.Reset(off, n)
			m.inflight = append(m.inflight, span{off, n})
			m.inBytes += n
			m.mu.Unlock()
			break
		}
		m.mu.Unlock()
		if err := m.waitOne(ctx); err != nil {
			return err
		}
		if overlap {
			// The range may have been copied meanwhile: pick again.
			return nil
		}
	}
	if err := m.wait(ctx, n, limit); err != nil {
		m.finishOp(span{off, n}, 0, nil)
		m.bm.Set(off, n)
		return err
	}
	go func() {
		src, err := m.copy(off, n)
		m.finishOp(span{off, n}, n, err)
		if err != nil {
			m.bm.Set(off, n)
			m.mu.Lock()
			m.errs = append(m.errs, opError{span{off, n}, src, err})
			m.mu.Unlock()
		}
	}()
	return nil
}

func (m *Mirror) finishOp(s span, copied int64, err error) {
	m.mu.Lock()
	for i, x := range m.inflight {
		if x == s {
			m.inflight = append(m.inflight[:i], m.inflight[i+1:]...)
			break
		}
	}
	m.inBytes -= s.n
	m.writes++
	if err == nil {
		m.done += copied
	}
	m.mu.Unlock()
	select {
	case m.opDone <- struct{}{}:
	default:
	}
}

// copy reads [off, off+n) through the source's chain and writes it to
// the target; ranges the source reads as zeroes become write-zeroes,
// or nothing where the target reads zeroes already. source says which
// side failed.
func (m *Mirror) copy(off, n int64) (source bool, err error) {
	var bp *[]byte
	defer func() {
		if bp != nil {
			m.bufs.Put(bp)
		}
	}()
	for end := off + n; off < end; {
		st, l, err := block.StatusAbove(m.src, nil, off, end-off)
		if err != nil {
			return true, fail(OpStatus, off, err)
		}
		if st.Zero {
			dst, dl, err := block.StatusAbove(m.dst, nil, off, l)
			if err != nil {
				return false, fail(OpStatus, off, err)
			}
			if !dst.Zero {
				if err := m.dst.WriteZeroes(off, dl, false); err != nil {
					return false, fail(OpWrite, off, err)
				}
			}
			off += dl
			continue
		}
		if bp == nil {
			// A fresh megabyte per copy cost as much clearing and
			// collecting as the copy's own memmove.
			if bp, _ = m.bufs.Get().(*[]byte); bp == nil {
				b := make([]byte, m.chunk)
				bp = &b
			}
		}
		buf := *bp
		if _, err := m.src.ReadAt(buf[:l], off); err != nil {
			return true, fail(OpRead, off, err)
		}
		if _, err := m.dst.WriteAt(buf[:l], off); err != nil {
			return false, fail(OpWrite, off, err)
		}
		off += l
	}
	return false, nil
}

func (m *Mirror) copiesEnded() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writes
}

func (m *Mirror) busy() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.inflight) > 0
}

// waitOne waits for a copy to end (or ctx).
func (m *Mirror) waitOne(ctx context.Context) error {
	select {
	case <-m.opDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitAll waits for every copy in flight, whatever ctx says: none may
// write the target after Run returns.
func (m *Mirror) waitAll() {
	for m.busy() {
		<-m.opDone
	}
}

// takeError hands a failed copy to OnError: nil lets the loop go on
// (the range is dirty again), an error ends the mirror.
func (m *Mirror) takeError() error {
	m.mu.Lock()
	errs := m.errs
	m.errs = nil
	m.mu.Unlock()
	for _, e := range errs {
		if err := m.failed(e.source, e.err); err != nil {
			return err
		}
	}
	return nil
}

func (m *Mirror) failed(source bool, err error) error {
	if m.o.OnError == nil {
		return err
	}
	return m.o.OnError(source, err)
}
