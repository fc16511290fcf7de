package block

import (
	"fmt"
	"math/bits"
	"slices"
)

// A user's dirty bitmaps: named bitmaps on a node that record the writes
// completed on it (QEMU's block-dirty-bitmap-* commands, with their
// checks and words). They live in the node's dirty set with the jobs'
// own bitmaps (dirty.go), so that one hook on the write path marks them
// all; what makes one a user's is its name. Their state changes under
// the graph's mu, as QMP transactions do.

// maxBitmapName is QEMU's BDRV_BITMAP_MAX_NAME_SIZE.
const maxBitmapName = 1023

// BitmapRef names a bitmap: by its node and name, or (Node "") by a name
// alone, whose node the context gives.
type BitmapRef struct{ Node, Name string }

// BitmapAction is one block-dirty-bitmap command, alone or in a
// transaction.
type BitmapAction struct {
	// Op is "add", "remove", "clear", "enable", "disable" or "merge".
	Op string
	// Node and Name name the bitmap (merge's target).
	Node, Name string
	// Granularity (add) in bytes, if HasGranularity; otherwise QEMU's
	// default for the node.
	Granularity    int64
	HasGranularity bool
	// Persistent and Disabled are add's options.
	Persistent, Disabled bool
	// Sources are merge's bitmaps; a Node "" is the target's node.
	Sources []BitmapRef
}

// BitmapInfo is a node's bitmap as query-block shows it (BlockDirtyInfo).
type BitmapInfo struct {
	Name        string // "" for a job's own
	Recording   bool
	Busy        bool
	Persistent  bool
	Granularity int64
	Count       int64 // bytes in dirty granules, the last one whole
}

// DirtyBitmaps lists n's bitmaps newest first, as QEMU lists them (its
// list takes new bitmaps at the head), jobs' unnamed ones included.
func (n *Node) DirtyBitmaps() []BitmapInfo {
	p := n.dirty.Load()
	if p == nil {
		return nil
	}
	out := make([]BitmapInfo, 0, len(*p))
	for _, b := range slices.Backward(*p) {
		out = append(out, BitmapInfo{
			Name: b.name, Recording: !b.disabled.Load(), Busy: b.busy.Load(),
			Granularity: b.Granularity(), Count: b.dirtyBytes(),
		})
	}
	return out
}

// Name is a user's bitmap's name.
func (b *DirtyBitmap) Name() string { return b.name }

// findBitmap is n's user bitmap named name (bdrv_find_dirty_bitmap).
func (n *Node) findBitmap(name string) *DirtyBitmap {
	if p := n.dirty.Load(); p != nil {
		for _, b := range *p {
			if b.name != "" && b.name == name {
				return b
			}
		}
	}
	return nil
}

// lookupBitmap is block_dirty_bitmap_lookup. g.mu is held.
func (g *Graph) lookupBitmap(node, name string) (*DirtyBitmap, error) {
	n, err := g.lookup(node)
	if err != nil {
		return nil, fmt.Errorf("Node '%s' not found", node)
	}
	b := n.findBitmap(name)
	if b == nil {
		return nil, fmt.Errorf("Dirty bitmap '%s' not found", name)
	}
	return b, nil
}

// checkBusy is bdrv_dirty_bitmap_check for the one state minivmm's
// bitmaps can be in that refuses the monitor (they are never read-only
// nor inconsistent: none is stored in an image).
func checkBusy(b *DirtyBitmap) error {
	if b.busy.Load() {
		return fmt.Errorf("Bitmap '%s' is currently in use by another operation and cannot be used", b.name)
	}
	return nil
}

// defaultBitmapGranularity is QEMU's bdrv_get_default_bitmap_granularity:
// the node's cluster size clamped to [4 KiB, 64 KiB], 64 KiB for a node
// without clusters.
func defaultBitmapGranularity(n *Node) int64 {
	if cs, ok := n.Image().(interface{ ClusterSize() int64 }); ok && cs.ClusterSize() > 0 {
		return min(max(cs.ClusterSize(), 4<<10), 64<<10)
	}
	return 64 << 10
}

// deviceOrNodeName is QEMU's bdrv_get_device_or_node_name. g.mu is held.
func (g *Graph) deviceOrNodeName(n *Node) string {
	for _, b := range n.users {
		if b.name != "" {
			return b.name
		}
	}
	return n.name
}

// bitmapStep is a prepared action: undone if the transaction fails,
// committed if all of it is ready.
type bitmapStep struct {
	undo, commit func()
}

// prepareBitmap does an action's work as QEMU's prepare does, so that the
// actions after it in a transaction see it; the step undoes or finishes
// it. g.mu is held.
func (g *Graph) prepareBitmap(a BitmapAction) (bitmapStep, error) {
	nop := func() {}
	switch a.Op {
	case "add":
		b, err := g.addBitmap(a)
		if err != nil {
			return bitmapStep{}, err
		}
		return bitmapStep{undo: func() { b.node.RemoveDirtyBitmap(b) }, commit: nop}, nil
	case "merge":
		return g.mergeBitmaps(a)
	}
	b, err := g.lookupBitmap(a.Node, a.Name)
	if err != nil {
		return bitmapStep{}, err
	}
	if err := checkBusy(b); err != nil {
		return bitmapStep{}, err
	}
	switch a.Op {
	case "remove":
		// Held busy until the commit, so that the actions after it in
		// the transaction may not use it.
		b.busy.Store(true)
		return bitmapStep{
			undo:   func() { b.busy.Store(false) },
			commit: func() { b.busy.Store(false); b.node.RemoveDirtyBitmap(b) },
		}, nil
	case "clear":
		backup := b.clear()
		return bitmapStep{undo: func() { b.restore(backup) }, commit: nop}, nil
	case "enable", "disable":
		was := b.disabled.Swap(a.Op == "disable")
		return bitmapStep{undo: func() { b.disabled.Store(was) }, commit: nop}, nil
	}
	return bitmapStep{}, fmt.Errorf("unknown bitmap action %q", a.Op)
}

// addBitmap is qmp_block_dirty_bitmap_add. g.mu is held.
func (g *Graph) addBitmap(a BitmapAction) (*DirtyBitmap, error) {
	if a.Name == "" {
		return nil, fmt.Errorf("Bitmap name cannot be empty")
	}
	n, err := g.lookup(a.Node)
	if err != nil {
		return nil, err
	}
	gran := a.Granularity
	if a.HasGranularity {
		if gran < 512 || bits.OnesCount64(uint64(gran)) != 1 {
			return nil, fmt.Errorf("Granularity must be power of 2 and at least 512")
		}
	} else {
		gran = defaultBitmapGranularity(n)
	}
	if a.Persistent {
		// Bitmaps stored in qcow2 images are not minivmm's (yet): any
		// node refuses them, as QEMU's drivers without them do.
		return nil, fmt.Errorf("Can't store persistent bitmaps to %s: Operation not supported", g.deviceOrNodeName(n))
	}
	if n.findBitmap(a.Name) != nil {
		return nil, fmt.Errorf("Bitmap already exists: %s", a.Name)
	}
	if len(a.Name) > maxBitmapName {
		return nil, fmt.Errorf("Bitmap name too long: %s", a.Name)
	}
	b, err := NewDirtyBitmap(n.Length(), gran)
	if err != nil {
		return nil, err
	}
	b.name, b.node = a.Name, n
	b.disabled.Store(a.Disabled)
	n.AddDirtyBitmap(b)
	return b, nil
}

// mergeBitmaps is block_dirty_bitmap_merge: the target gains every
// source's dirty granules, all or nothing. g.mu is held.
func (g *Graph) mergeBitmaps(a BitmapAction) (bitmapStep, error) {
	dst, err := g.lookupBitmap(a.Node, a.Name)
	if err != nil {
		return bitmapStep{}, err
	}
	var backup *bitmapBackup
	fail := func(err error) (bitmapStep, error) {
		if backup != nil {
			dst.restore(backup)
		}
		return bitmapStep{}, err
	}
	for _, r := range a.Sources {
		var src *DirtyBitmap
		if r.Node == "" {
			if src = dst.node.findBitmap(r.Name); src == nil {
				return fail(fmt.Errorf("Dirty bitmap '%s' not found", r.Name))
			}
		} else if src, err = g.lookupBitmap(r.Node, r.Name); err != nil {
			return fail(err)
		}
		if err := checkBusy(dst); err != nil {
			return fail(err)
		}
		if err := checkBusy(src); err != nil {
			return fail(err)
		}
		if src.length != dst.length {
			return fail(fmt.Errorf("Bitmaps are of different sizes (destination size is %d, source size is %d) and can't be merged", dst.length, src.length))
		}
		if backup == nil {
			backup = dst.backup()
		}
		dst.merge(src)
	}
	return bitmapStep{undo: func() {
		if backup != nil {
			dst.restore(backup)
		}
	}, commit: func() {}}, nil
}

// Bitmaps runs one bitmap command (a transaction of one action).
func (g *Graph) Bitmaps(a BitmapAction) error {
	return g.Snapshot([]SnapshotAction{{Bitmap: &a}})
}

// AcquireBitmaps finds the bitmaps an export of n names and holds them
// busy until ReleaseBitmaps, as QEMU's nbd_export_create: a name alone
// is looked for down n's chain of filtered and backing children; a
// read-only export refuses a bitmap that still records a writable node.
func (n *Node) AcquireBitmaps(refs []BitmapRef, readOnly bool) ([]*DirtyBitmap, error) {
	g := n.g
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*DirtyBitmap
	for _, r := range refs {
		var b *DirtyBitmap
		if r.Node == "" {
			var at *Node
			for at = n; at != nil; at = filterOrCow(at) {
				if b = at.findBitmap(r.Name); b != nil {
					break
				}
			}
			if b == nil {
				return nil, fmt.Errorf("Bitmap '%s' is not found", r.Name)
			}
			if readOnly && !at.state.readOnly && !b.disabled.Load() {
				return nil, fmt.Errorf("Enabled bitmap '%s' incompatible with readonly export", r.Name)
			}
		} else {
			var err error
			if b, err = g.lookupBitmap(r.Node, r.Name); err != nil {
				return nil, err
			}
		}
		if err := checkBusy(b); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	// QEMU names no bitmap twice in its checks, but marks each busy: a
	// bitmap listed twice is exported twice.
	for _, b := range out {
		b.busy.Store(true)
	}
	return out, nil
}

// ReleaseBitmaps lets the monitor use bitmaps an export held again.
func ReleaseBitmaps(bms []*DirtyBitmap) {
	for _, b := range bms {
		g := b.node.g
		g.mu.Lock()
		b.busy.Store(false)
		g.mu.Unlock()
	}
}

// filterOrCow is QEMU's bdrv_filter_or_cow_bs: the backing child, or a
// job filter's filtered one.
func filterOrCow(n *Node) *Node {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if b := n.children["backing"]; b != nil {
		return b
	}
	if n.filter {
		return n.children["file"]
	}
	return nil
}
