package engine

import (
	"context"

	"minivmm/block"
)

// streamChunk is the most one stream step copies (QEMU's STREAM_CHUNK).
const streamChunk = 512 << 10

// streamInFlight is how many chunks are copied at once: while one chunk
// is written to top (whose allocating writes take its image's write
// lock one at a time) the next ones are read from below. QEMU's stream
// copies one chunk after the other.
const streamInFlight = 4

// Stream copies into top what the images below it, down to (not
// including) base (nil: the whole chain), allocate where top itself does
// not, as QEMU's block-stream does. top must be writable and serialising
// ([block.Node.Serialise]): each step holds its range of top against
// writers while it looks at top's allocation and copies, so data a
// writer put in top is never overwritten with older data from below.
// A few chunks are copied at once, never two over one range; the rate
// limit, cancellation and retries are decided here, between chunks,
// and top is flushed once every chunk has ended. Progress counts bytes
// of top's length.
func Stream(ctx context.Context, top, base *block.Node, o Options) error {
	return stream(ctx, top, base, o, streamInFlight)
}

// stream is Stream with at most inFlight chunks copied at once.
func stream(ctx context.Context, top, base *block.Node, o Options, inFlight int) error {
	length := top.Length()
	type result struct {
		start, off, end int64 // the chunk; off is where a failed one stopped
		copied          int64
		err             error
	}
	results := make(chan result, inFlight)
	bufs := make(chan []byte, inFlight)
	for range inFlight {
		bufs <- make([]byte, streamChunk)
	}
	launch := func(s span) {
		buf := <-bufs
		go func() {
			r := result{start: s.off, off: s.off, end: s.off + s.n}
			for r.off < r.end {
				n, copied, err := streamStep(top, base, buf, r.off, r.end-r.off)
				if err != nil {
					r.err = err
					break
				}
				r.off += n
				if copied {
					r.copied += n
				}
			}
			bufs <- buf
			results <- r
		}()
	}
	var (
		done, next int64
		retries    []span
		inflight   int
		err        error
	)
	for {
		if err == nil && inflight < inFlight && (len(retries) > 0 || next < length) {
			if err = o.wait(ctx, 0); err != nil {
				continue
			}
			var s span
			if len(retries) > 0 {
				s, retries = retries[0], retries[1:]
			} else {
				s = span{next, min(streamChunk, length-next)}
				next += s.n
			}
			launch(s)
			inflight++
			continue
		}
		if inflight == 0 {
			break
		}
		r := <-results
		inflight--
		done += r.off - r.start
		o.progress(done, length)
		if err != nil {
			continue
		}
		if r.copied > 0 {
			err = o.wait(ctx, r.copied)
		}
		if r.err != nil && err == nil {
			if o.retry(r.err) {
				retries = append(retries, span{r.off, r.end - r.off})
			} else {
				err = r.err
			}
		}
	}
	if err != nil {
		return err
	}
	return fail(OpFlush, 0, top.Flush())
}

// streamStep copies, if needed, the range at off (at most n bytes) under
// a serialising hold, and says how far it got.
func streamStep(top, base *block.Node, buf []byte, off, n int64) (done int64, copied bool, err error) {
	unlock := top.SerialiseRange(off, n)
	defer unlock()
	alloc, n, err := block.Allocated(top, off, n)
	if err != nil {
		return 0, false, fail(OpStatus, off, err)
	}
	below := top.Child("backing")
	if alloc || below == nil || below == base {
		return n, false, nil
	}
	present, n, err := block.AllocatedAbove(below, base, off, n)
	if err != nil {
		return 0, false, fail(OpStatus, off, err)
	}
	if !present {
		return n, false, nil
	}
	if _, err := top.ReadAt(buf[:n], off); err != nil {
		return 0, false, fail(OpRead, off, err)
	}
	if _, err := top.WriteV([][]byte{buf[:n]}, off, block.Serialised); err != nil {
		return 0, false, fail(OpWrite, off, err)
	}
	return n, true, nil
}
