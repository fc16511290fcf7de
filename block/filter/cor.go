package filter

import (
	"minivmm/block"
)

// maxCopy bounds one copy-on-read step's bounce buffer (QEMU's
// MAX_BOUNCE_BUFFER, 16 MiB).
const maxCopy = 16 << 20

// corChildPerm is QEMU's cor_child_perm: what the filter's users need,
// and the right to write unchanged data (the copies) into its child.
func corChildPerm(role string, opts block.Options, ro bool, perm, shared block.Perms) (block.Perms, block.Perms) {
	return perm | block.PermWriteUnchanged, shared | block.PermWriteUnchanged
}

// corRead is a read through copy-on-read (QEMU's
// bdrv_co_do_copy_on_readv): the range, widened to the child's clusters,
// is read a piece at a time; a piece its child does not allocate itself
// (it comes from a backing file, or reads as zeroes) is written into the
// child, as zeroes where it is all zeroes, under a serialising hold so
// that a write made after the read is never overwritten with the older
// data. The read is served from what was read.
func (f *image) corRead(p []byte, off int64) (int, error) {
	cs := clusterSize(f.child)
	end := off + int64(len(p))
	start := off &^ (cs - 1)
	stop := min((end+cs-1)&^(cs-1), f.child.Length())
	var buf []byte
	for pos := start; pos < stop; {
		n := min(stop-pos, maxCopy)
		done, err := f.corStep(&buf, p, off, pos, n)
		if err != nil {
			return 0, err
		}
		pos += done
	}
	return len(p), nil
}

// corStep copies (if needed) and reads the piece at pos, at most n bytes,
// and says how far it got.
func (f *image) corStep(buf *[]byte, p []byte, off, pos, n int64) (int64, error) {
	unlock := f.child.SerialiseRange(pos, n)
	defer unlock()
	direct, n, err := block.Allocated(f.child, pos, n)
	if err != nil {
		return 0, err
	}
	if !direct && f.bottom != nil {
		// What only the layers below bottom hold is read, not copied.
		cs, l, err := block.StatusAbove(f.child, f.bottom.Backing(), pos, n)
		if err != nil {
			return 0, err
		}
		direct, n = !cs.Present, l
	}
	lo, hi := max(pos, off), min(pos+n, off+int64(len(p)))
	if direct {
		if lo < hi {
			if _, err := f.child.ReadAt(p[lo-off:hi-off], lo); err != nil {
				return 0, err
			}
		}
		return n, nil
	}
	if int64(cap(*buf)) < n {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	if _, err := f.child.ReadAt(b, pos); err != nil {
		return 0, err
	}
	if allZero(b) {
		err = f.child.WriteZeroesFlags(pos, n, false, block.Serialised)
	} else {
		_, err = f.child.WriteV([][]byte{b}, pos, block.Serialised)
	}
	if err != nil {
		return 0, err
	}
	if lo < hi {
		copy(p[lo-off:hi-off], b[lo-pos:hi-pos])
	}
	return n, nil
}

// clusterSize is the unit copy-on-read copies in: the cluster size of
// the first image below n that has one (through filters such as
// blkdebug), else 512 bytes.
func clusterSize(n *block.Node) int64 {
	for depth := 0; n != nil && depth < 16; depth++ {
		if c, ok := n.Image().(interface{ ClusterSize() int64 }); ok && c.ClusterSize() > 0 {
			return c.ClusterSize()
		}
		next := n.Child("file")
		if next == nil {
			next = n.Child("image")
		}
		n = next
	}
	return 512
}

func allZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}
