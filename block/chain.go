package block

// Block status through a backing chain: what the layers from a top node
// down to (not including) a base provide, as QEMU's
// bdrv_block_status_above and bdrv_is_allocated_above answer it. Commit,
// stream, rebase, convert, map and compare all ask this one question.

import "slices"

// ChainStatus is the status of a range seen through a backing chain.
type ChainStatus struct {
	// Present: a layer above the base allocates the range; Layer is that
	// node and Depth how far below the top it is.
	Present bool
	Layer   *Node
	Depth   int
	Zero    bool  // reads as zeroes
	Data    bool  // holds data
	Offset  int64 // host offset in Layer's file child, or -1
}

// StatusAbove is the status of the range at off (at most n bytes) through
// top's backing chain down to base (nil: the whole chain), taken from the
// first layer that allocates it, and how many bytes share that status.
// A range no layer above base allocates is not Present; where the chain
// reaches its bottom (base nil, or the range lies past a backing file's
// end) it reads as zeroes.
func StatusAbove(top, base *Node, off, n int64) (ChainStatus, int64, error) {
	node := top
	depth := 0
	for {
		st, l, err := node.BlockStatus(off, n)
		if err != nil {
			return ChainStatus{}, 0, err
		}
		n = l
		if st.Allocated {
			cs := ChainStatus{Present: true, Layer: node, Depth: depth, Zero: st.Zero, Data: st.Data, Offset: -1}
			if st.Offset >= 0 {
				cs.Offset = st.Offset
			}
			return cs, n, nil
		}
		b := node.Backing()
		if b != nil && b == base {
			return ChainStatus{Depth: depth, Offset: -1}, n, nil
		}
		if b == nil || off >= b.Length() {
			// Only a driver with backing files reads zeroes where it
			// allocates nothing; another's unallocated range is zero if
			// it says so (a job filter passing on its child's status),
			// and a protocol's hole that is not zero (an NBD server's)
			// stays unknown, as in QEMU's block status.
			zero := b != nil || st.Zero || slices.Contains(node.drv.children(), "backing")
			return ChainStatus{Depth: depth, Zero: zero, Offset: -1}, n, nil
		}
		n = min(n, b.Length()-off)
		node = b
		depth++
	}
}

// Allocated is QEMU's bdrv_is_allocated: whether node itself allocates
// the range at off, and for how long (at most n bytes) that holds.
// BlockStatus may end a range where the backing file's status changes;
// unallocated ranges are joined here.
func Allocated(node *Node, off, n int64) (bool, int64, error) {
	st, l, err := node.BlockStatus(off, n)
	if err != nil || st.Allocated {
		return st.Allocated, l, err
	}
	for l < n {
		next, ln, err := node.BlockStatus(off+l, n-l)
		if err != nil {
			return false, 0, err
		}
		if next.Allocated {
			break
		}
		l += ln
	}
	return false, l, nil
}

// AllocatedAbove is QEMU's bdrv_is_allocated_above(top, base) with base
// excluded: whether a layer from top down to base's child allocates the
// range at off, and for how long (at most n bytes) that holds.
func AllocatedAbove(top, base *Node, off, n int64) (bool, int64, error) {
	bytes := n
	for l := top; l != nil && l != base; l = l.Backing() {
		if off >= l.Length() {
			continue
		}
		alloc, ln, err := Allocated(l, off, min(bytes, l.Length()-off))
		if err != nil {
			return false, 0, err
		}
		if alloc {
			return true, ln, nil
		}
		if n > ln && (l == top || off+ln < l.Length()) {
			n = ln
		}
	}
	return false, n, nil
}
