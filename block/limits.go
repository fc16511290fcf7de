package block

import (
	"errors"
	"slices"
)

// Limits are what a node's requests must look like when they reach its
// driver (QEMU's BlockLimits): the generic layer pads, splits and
// aligns every request to them, so a driver sees only what it declared
// it can take.
type Limits struct {
	// RequestAlignment: offsets and lengths a multiple of it (a power of
	// two; 1: any). Unaligned reads are widened and trimmed, unaligned
	// writes become a read-modify-write of the head and tail blocks.
	RequestAlignment int64
	// MaxTransfer: reads and writes longer than it are split (0: none).
	MaxTransfer int64
	// PwriteZeroesAlignment: write-zeroes requests are split at its
	// multiples, and a piece shorter than it may be written as zeroes
	// from a buffer; MaxPwriteZeroes: longest write-zeroes (0: none).
	PwriteZeroesAlignment int64
	MaxPwriteZeroes       int64
	// PdiscardAlignment: discards are split at its multiples;
	// MaxPdiscard: longest discard (0: none).
	PdiscardAlignment int64
	MaxPdiscard       int64
}

// LimitRefresher is a driver that sets limits of its own (QEMU's
// bdrv_refresh_limits callback). It gets the defaults, which hold what
// the node's children impose, and overrides what it must.
type LimitRefresher interface {
	RefreshLimits(l *Limits)
}

// maxAlignment is QEMU's BDRV_MAX_ALIGNMENT.
const maxAlignment = 1 << 30

var defaultLimits = &Limits{RequestAlignment: 1}

// Limits are the node's request limits now.
func (n *Node) Limits() Limits { return *n.limitsNow() }

func (n *Node) limitsNow() *Limits {
	if l := n.limits.Load(); l != nil {
		return l
	}
	return defaultLimits
}

// computeLimits is QEMU's bdrv_refresh_limits: every driver here takes
// bytes, so alignment starts at 1; the children that hold the node's
// data (all of them here: file, image, backing, data-file) give their
// transfer and discard limits as the default (bdrv_merge_limits: the
// request alignment and the zero limits are not inherited), then the
// driver overrides.
func (n *Node) computeLimits() (*Limits, error) {
	l := &Limits{RequestAlignment: 1}
	keys := make([]string, 0, len(n.children))
	for k := range n.children {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		c := n.children[k].limitsNow()
		l.PdiscardAlignment = max(l.PdiscardAlignment, c.PdiscardAlignment)
		l.MaxTransfer = minNonZero(l.MaxTransfer, c.MaxTransfer)
	}
	if r, ok := n.img.(LimitRefresher); ok {
		r.RefreshLimits(l)
	}
	a := l.RequestAlignment
	if a < 1 || a&(a-1) != 0 || a > maxAlignment {
		return nil, errors.New("Driver requires too large request alignment")
	}
	return l, nil
}

// checkAlignedSize refuses a writer on a node whose size is not a
// multiple of its request alignment, unless it may also resize (QEMU's
// bdrv_node_refresh_perm): the padding of an unaligned write at the end
// would write past the end.
func checkAlignedSize(n *Node, perm Perms) error {
	if perm&(PermWrite|PermWriteUnchanged) == 0 || perm&PermResize != 0 || n.img == nil {
		return nil
	}
	if n.length.Load()%n.limitsNow().RequestAlignment != 0 {
		return errors.New("Cannot get 'write' permission without 'resize': Image size is not a multiple of request alignment")
	}
	return nil
}

// setLimits puts l in force on n.
func (n *Node) setLimits(l *Limits) {
	n.limits.Store(l)
	n.limited.Store(l.RequestAlignment > 1 || l.MaxTransfer != 0)
}

func minNonZero(a, b int64) int64 {
	if a == 0 || b != 0 && b < a {
		return b
	}
	return a
}

// refreshLimits recomputes the limits of nodes and of everything above
// them, children before parents, after the graph changed around them (a
// reopen: O_DIRECT's alignment, a new child). g.mu held.
func (g *Graph) refreshLimits(nodes []*Node) {
	stale := map[*Node]bool{}
	var mark func(n *Node)
	mark = func(n *Node) {
		if stale[n] {
			return
		}
		stale[n] = true
		for p := range n.parents {
			mark(p)
		}
	}
	for _, n := range nodes {
		mark(n)
	}
	var visit func(n *Node)
	visit = func(n *Node) {
		if !stale[n] {
			return
		}
		delete(stale, n)
		for _, c := range n.children {
			visit(c)
		}
		if n.img == nil {
			return
		}
		// A reopen cannot make a driver ask for what it refused at
		// open; should it, the old limits stay.
		if l, err := n.computeLimits(); err == nil {
			n.setLimits(l)
		}
	}
	for _, n := range nodes {
		visit(n)
	}
	for len(stale) > 0 {
		for n := range stale {
			visit(n)
			break
		}
	}
}
