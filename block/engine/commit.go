package engine

import (
	"context"

	"minivmm/block"
)

// commitChunk is the most one commit step copies.
const commitChunk = 2 << 20

// Commit copies into base what the images from top down to (not
// including) base allocate, each range taken through top so that it
// comes from the layer that provides it, then flushes base. base must be
// in top's backing chain and the caller must hold write permission on
// it; a base shorter than top is grown first. Progress counts bytes of
// top's length. With unmap, the zeroes of the images above base may
// deallocate base's clusters (qemu-img commit: QEMU's active commit, a
// mirror job with unmap); without, base keeps its allocation (QEMU's
// commit job writes the zeroes as data).
func Commit(ctx context.Context, top, base *block.Node, unmap bool, o Options) error {
	length := top.Length()
	if base.Length() < length {
		if err := base.Truncate(length); err != nil {
			return fail(OpResize, length, err)
		}
	}
	buf := make([]byte, commitChunk)
	for off := int64(0); off < length; {
		st, n, err := block.StatusAbove(top, base, off, min(commitChunk, length-off))
		if err != nil {
			return fail(OpStatus, off, err)
		}
		if st.Present {
			if err := o.wait(ctx, n); err != nil {
				return err
			}
			if st.Zero {
				err = fail(OpWrite, off, base.WriteZeroes(off, n, unmap))
			} else if _, err = top.ReadAt(buf[:n], off); err != nil {
				err = fail(OpRead, off, err)
			} else {
				_, err = base.WriteAt(buf[:n], off)
				err = fail(OpWrite, off, err)
			}
			if err != nil {
				if o.retry(err) {
					continue
				}
				return err
			}
		}
		off += n
		o.progress(off, length)
	}
	return fail(OpFlush, 0, base.Flush())
}
