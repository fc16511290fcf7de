package engine

import (
	"bytes"
	"context"
	"math"

	"minivmm/block"
)

// RebaseChunk is how much of each backing chain one rebase step compares
// (qemu-img's IO_BUF_SIZE, which its progress steps follow).
const RebaseChunk = 2 << 20

// Rebase makes img read the same over newBacking as it reads now over
// oldBacking (either may be nil: no backing file): where img allocates
// nothing itself and the two chains read differently (compared sector by
// sector, as qemu-img does), it writes the old chain's data into img,
// then flushes img. It steps through img as qemu-img 7.2's rebase does:
// at most RebaseChunk at a time, cut where either backing file ends, and,
// where newBacking is prefix (a node in the old chain), skipping what no
// image above prefix allocates. The caller holds write permission on
// img and changes its backing file afterwards.
//
// Progress counts steps compared: done is the number so far, total
// qemu-img's share denominator (img's length in whole steps), which steps
// may exceed.
func Rebase(ctx context.Context, img, oldBacking, newBacking, prefix *block.Node, o Options) error {
	size := img.Length()
	a := make([]byte, RebaseChunk)
	b := make([]byte, RebaseChunk)
	var steps, total int64
	if size > 0 {
		total = size / min(size, RebaseChunk)
	}
	var n int64
	for off := int64(0); off < size; off += n {
		alloc, l, err := block.Allocated(img, off, min(RebaseChunk, size-off))
		if err != nil {
			return fail(OpStatus, off, err)
		}
		if n = l; alloc {
			continue
		}
		// Past the end of a layer above prefix, the old chain reads
		// zeroes whatever prefix holds, so "nothing above prefix
		// allocates it" does not mean "reads as prefix": compare there
		// (qemu-img's "stop when reaching EOF of old backing file" fix).
		if end := shortestAbove(oldBacking, prefix); prefix != nil && off < end {
			n = min(n, end-off)
			alloc, l, err := block.AllocatedAbove(oldBacking, prefix, off, n)
			if err != nil {
				return fail(OpStatus, off, err)
			}
			if n = l; !alloc {
				continue
			}
		}
		for _, bk := range []*block.Node{oldBacking, newBacking} {
			if bk != nil && off < bk.Length() {
				n = min(n, bk.Length()-off)
			}
		}
		if err := o.wait(ctx, n); err != nil {
			return err
		}
		// Past the old backing file's end (or without one) the old chain
		// reads zeroes: write zeroes, not zeroed data, as qemu-img does.
		oldZero := oldBacking == nil || off >= oldBacking.Length()
		if err := readChain(oldBacking, a[:n], off); err != nil {
			return err
		}
		if err := readChain(newBacking, b[:n], off); err != nil {
			return err
		}
		for i := int64(0); i < n; {
			j := i
			for j < n && !bytes.Equal(a[j:min(j+512, n)], b[j:min(j+512, n)]) {
				j = min(j+512, n)
			}
			if j > i {
				var err error
				if oldZero {
					err = img.WriteZeroes(off+i, j-i, false)
				} else {
					_, err = img.WriteAt(a[i:j], off+i)
				}
				if err != nil {
					return fail(OpWrite, off+i, err)
				}
				i = j
				continue
			}
			i = min(i+512, n)
		}
		steps++
		o.progress(steps, total)
	}
	return fail(OpFlush, 0, img.Flush())
}

// readChain reads n's content at off into p, zeroes past its end or
// without n.
func readChain(n *block.Node, p []byte, off int64) error {
	clear(p)
	if n == nil || off >= n.Length() {
		return nil
	}
	_, err := n.ReadAt(p[:min(int64(len(p)), n.Length()-off)], off)
	return fail(OpRead, off, err)
}

// shortestAbove is the length of the shortest layer from top down to,
// not including, base.
func shortestAbove(top, base *block.Node) int64 {
	end := int64(math.MaxInt64)
	for l := top; l != nil && l != base; l = l.Child("backing") {
		end = min(end, l.Length())
	}
	return end
}
