package engine

import (
	"context"

	"minivmm/block"
)

// streamChunk is the most one stream step copies (QEMU's STREAM_CHUNK).
const streamChunk = 512 << 10

// Stream copies into top what the images below it, down to (not
// including) base (nil: the whole chain), allocate where top itself does
// not, as QEMU's block-stream does. top must be writable and serialising
// ([block.Node.Serialise]): each step holds its range of top against
// writers while it looks at top's allocation and copies, so data a
// writer put in top is never overwritten with older data from below.
// Progress counts bytes of top's length.
func Stream(ctx context.Context, top, base *block.Node, o Options) error {
	length := top.Length()
	buf := make([]byte, streamChunk)
	for off := int64(0); off < length; {
		if err := o.wait(ctx, 0); err != nil {
			return err
		}
		n, copied, err := streamStep(top, base, buf, off, min(streamChunk, length-off))
		if err != nil {
			if o.retry(err) {
				continue
			}
			return err
		}
		off += n
		o.progress(off, length)
		if copied {
			if err := o.wait(ctx, n); err != nil {
				return err
			}
		}
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
