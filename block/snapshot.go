package block

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"minivmm/qemuopen"
)

// SnapshotAction is one blockdev-snapshot: Overlay, a node added with no
// backing file, takes the place of Node (a node name or a backend's
// name) in every parent and backend, and Node becomes its backing file.
type SnapshotAction struct {
	Node, Overlay string
	// Sync, if set, makes this a blockdev-snapshot-sync: the overlay is
	// an image file, made (or, existing, only opened) as the action is
	// prepared. Node and Overlay are then unused.
	Sync *SnapshotSync
	// Fail, if set, makes this action refuse the transaction when its
	// turn to be prepared comes (QMP's "abort" action).
	Fail error
	// Bitmap, if set, makes this a block-dirty-bitmap action
	// (bitmap.go); the other fields are then unused.
	Bitmap *BitmapAction
}

// SnapshotSync is what blockdev-snapshot-sync names: the old top by a
// backend's name (Device) or a node's (NodeName), and the overlay's file,
// format ("" is qcow2) and node name ("" generates one).
type SnapshotSync struct {
	Device, NodeName string
	File, Format     string
	OverlayName      string
	// Existing: the file is there already, made by the management
	// layer (mode=existing); otherwise Create makes it.
	Existing bool
	// Create writes a new image of format at path (a path or
	// /dev/fdset/N, opened through files) whose backing file is backing,
	// of backingFormat, size bytes long; its errors are the reply.
	Create func(files *qemuopen.Registry, path, format, backing, backingFormat string, size int64) error
}

// snapshotMove is a prepared action: the nodes it joins.
type snapshotMove struct {
	old, overlay *Node
}

// Snapshot applies actions as one transaction (blockdev-snapshot, or a
// QMP transaction of them): every action is checked, in order and with
// QEMU's refusals, before any takes effect, and the overlays take their
// places in one reopen; if anything fails, nothing has changed. As QEMU
// does after the switch, each old top is then reopened read-only; that
// reopen is best effort (a failure leaves it read-write, which is safe,
// and the snapshot stands).
func (g *Graph) Snapshot(actions []SnapshotAction) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var moves []snapshotMove
	// Overlays opened by blockdev-snapshot-sync actions are closed again
	// if the transaction fails; as in QEMU, files made for them stay.
	var opened []*Node
	defer func() {
		if opened != nil {
			for _, n := range slices.Backward(opened) {
				g.remove(n)
			}
			g.releasePerms()
		}
	}()
	// Bitmap actions take effect as they are prepared (QEMU's do): undone
	// in reverse if the transaction fails, finished if it stands.
	var steps []bitmapStep
	defer func() {
		for _, s := range slices.Backward(steps) {
			s.undo()
		}
	}()
	for _, a := range actions {
		if a.Fail != nil {
			return a.Fail
		}
		if a.Bitmap != nil {
			s, err := g.prepareBitmap(*a.Bitmap)
			if err != nil {
				return err
			}
			steps = append(steps, s)
			continue
		}
		var m snapshotMove
		var err error
		if a.Sync != nil {
			m, err = g.prepareSnapshotSync(*a.Sync, &opened)
		} else {
			m, err = g.prepareSnapshot(a)
		}
		if err != nil {
			return err
		}
		for _, prev := range moves {
			if prev.old == m.old || prev.overlay == m.overlay || prev.old == m.overlay || prev.overlay == m.old {
				return fmt.Errorf("Node '%s' is listed twice", m.old.name)
			}
		}
		moves = append(moves, m)
	}
	if len(moves) > 0 {
		if err := g.switchToOverlays(moves); err != nil {
			return err
		}
	}
	for _, s := range steps {
		s.commit()
	}
	steps = nil
	opened = nil
	for _, m := range moves {
		g.reopenReadOnly(m.old)
	}
	return nil
}

// lookup finds a node by a backend's name or its own, as QEMU's
// bdrv_lookup_bs does.
func (g *Graph) lookup(name string) (*Node, error) {
	if b := g.backends[name]; b != nil {
		return b.Node(), nil
	}
	if n := g.nodes[name]; n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("Cannot find device='%s' nor node-name='%s'", name, name)
}

// prepareSnapshot checks one action in QEMU's order (the old top, then
// the overlay).
func (g *Graph) prepareSnapshot(a SnapshotAction) (snapshotMove, error) {
	old, err := g.lookup(a.Node)
	if err != nil {
		return snapshotMove{}, err
	}
	if err := backingBusy(old); err != nil {
		return snapshotMove{}, err
	}
	ov, err := g.lookup(a.Overlay)
	if err != nil {
		return snapshotMove{}, err
	}
	return g.checkOverlay(old, ov)
}

// checkOverlay is QEMU's checks of an overlay, common to both commands.
func (g *Graph) checkOverlay(old, ov *Node) (snapshotMove, error) {
	if len(ov.users) > 0 || len(ov.parents) > 0 {
		return snapshotMove{}, fmt.Errorf("The overlay is already in use")
	}
	if ov.children["backing"] != nil {
		return snapshotMove{}, fmt.Errorf("The overlay already has a backing image")
	}
	if _, ok := ov.img.(Reopener); !ok || !slices.Contains(ov.drv.children(), "backing") {
		return snapshotMove{}, fmt.Errorf("The overlay does not support backing images")
	}
	if old.hasDescendant(ov) {
		return snapshotMove{}, fmt.Errorf("Making '%s' a backing child of '%s' would create a cycle", old.name, ov.name)
	}
	for p, role := range old.parents {
		if _, ok := p.img.(Reopener); !ok {
			return snapshotMove{}, fmt.Errorf("Cannot change the option '%s' of node '%s'", role, p.name)
		}
	}
	return snapshotMove{old: old, overlay: ov}, nil
}

// prepareSnapshotSync finds the old top, makes the overlay's file unless
// it exists, and opens it with no backing file; the node opened is added
// to *opened.
func (g *Graph) prepareSnapshotSync(s SnapshotSync, opened *[]*Node) (snapshotMove, error) {
	var old *Node
	if b := g.backends[s.Device]; s.Device != "" && b != nil {
		old = b.Node()
	} else if n := g.nodes[s.NodeName]; s.NodeName != "" && n != nil {
		old = n
	} else {
		return snapshotMove{}, fmt.Errorf("Cannot find device='%s' nor node-name='%s'", s.Device, s.NodeName)
	}
	if err := backingBusy(old); err != nil {
		return snapshotMove{}, err
	}
	if s.NodeName != "" && s.OverlayName == "" {
		return snapshotMove{}, fmt.Errorf("New overlay node-name missing")
	}
	if s.OverlayName != "" && (g.nodes[s.OverlayName] != nil || g.backends[s.OverlayName] != nil) {
		return snapshotMove{}, fmt.Errorf("New overlay node-name already in use")
	}
	format := s.Format
	if format == "" {
		format = "qcow2"
	}
	if !s.Existing {
		if s.Create == nil {
			return snapshotMove{}, fmt.Errorf("Could not create '%s': no image creator", s.File)
		}
		if err := s.Create(g.files, s.File, format, old.Filename(), old.drv.Name, old.Length()); err != nil {
			return snapshotMove{}, err
		}
	}
	o := Options{"driver": format, "file": Options{"driver": "file", "filename": s.File}}
	if drv, ok := g.lookupDriver(format); ok && slices.Contains(drv.children(), "backing") {
		o["backing"] = nil
	}
	if s.OverlayName != "" {
		o["node-name"] = s.OverlayName
	}
	if _, err := g.checkOptions(o, ""); err != nil {
		return snapshotMove{}, err
	}
	ov, err := g.add(o, nil, false)
	if err != nil {
		return snapshotMove{}, err
	}
	*opened = append(*opened, ov)
	return g.checkOverlay(old, ov)
}

// backingBusy is QEMU's op blocker on a node that is another's backing
// file: it cannot be snapshotted (nor deleted) on its own.
func backingBusy(n *Node) error {
	for _, p := range slices.SortedFunc(maps.Keys(n.parents), func(a, b *Node) int { return strings.Compare(a.name, b.name) }) {
		if n.parents[p] == "backing" {
			return fmt.Errorf("Node '%s' is busy: node is used as backing hd of '%s'", n.name, p.name)
		}
	}
	return nil
}

// switchToOverlays is the commit of every action at once: the backends
// move to the overlays (writers first taken on the overlay, so a refusal
// changes nothing), then one reopen gives each overlay its backing file
// and each parent of an old top the overlay instead.
func (g *Graph) switchToOverlays(moves []snapshotMove) (err error) {
	var olds []*Node
	for _, m := range moves {
		// A Hold keeps these still until its holder's switch, which needs
		// g.mu: waiting for it here would deadlock (pivot.go).
		if m.old.held || m.overlay.held || slices.ContainsFunc(m.old.users, func(b *Backend) bool { return b.held }) {
			return errHeld(m.old.name)
		}
	}
	for _, m := range moves {
		olds = append(olds, m.old)
		// The backends' requests in flight end, and new ones wait for
		// the overlay (backend_io.go).
		for _, b := range m.old.users {
			b.io.Lock()
			defer b.io.Unlock()
		}
	}
	end := drainNodes(drainOrder(olds))
	defer end()

	type userMove struct {
		b        *Backend
		from, to *Node
		wrote    bool // the writer was added to the overlay
	}
	var users []userMove
	undo := func() {
		for _, u := range slices.Backward(users) {
			u.to.users = slices.DeleteFunc(u.to.users, func(x *Backend) bool { return x == u.b })
			if !slices.Contains(u.from.users, u.b) {
				u.from.users = append(u.from.users, u.b)
			}
			u.b.node.Store(u.from)
			if u.wrote {
				g.dropWriter(u.to, u.b.perm.ShareWrite, u.b.name)
			}
		}
	}
	for _, m := range moves {
		for _, b := range slices.Clone(m.old.users) {
			u := userMove{b: b, from: m.old, to: m.overlay}
			if b.perm.Write {
				if err := g.addWriter(m.overlay, b.perm.ShareWrite); err != nil {
					undo()
					return err
				}
				u.wrote = true
			}
			m.old.users = slices.DeleteFunc(m.old.users, func(x *Backend) bool { return x == b })
			m.overlay.users = append(m.overlay.users, b)
			users = append(users, u)
		}
	}
	// The users keep their order of arrival on the overlay.
	for _, m := range moves {
		slices.SortFunc(m.overlay.users, func(a, b *Backend) int { return cmp.Compare(a.seq, b.seq) })
	}

	var items []reopenItem
	for _, m := range moves {
		items = append(items, withChild(m.overlay, "backing", m.old))
		for _, p := range slices.SortedFunc(maps.Keys(m.old.parents), func(a, b *Node) int { return strings.Compare(a.name, b.name) }) {
			items = append(items, withChild(p, m.old.parents[p], m.overlay))
		}
	}
	if err := g.reopenNodes(items); err != nil {
		undo()
		return err
	}
	for _, u := range users {
		u.b.node.Store(u.to)
		if u.wrote {
			// The old top keeps no writer of its own: its backend's
			// write permission now lives on the overlay.
			g.dropWriter(u.from, u.b.perm.ShareWrite, u.b.name)
		}
	}
	return nil
}

// withChild is the reopen item that gives n child under key and changes
// nothing else.
func withChild(n *Node, key string, child *Node) reopenItem {
	children := maps.Clone(n.children)
	children[key] = child
	opts, own := n.opts.Clone(), n.own.Clone()
	opts[key], own[key] = child.name, child.name
	return reopenItem{node: n, state: n.state, opts: opts, own: own, children: children}
}

// reopenReadOnly makes the old top read-only, with the children it
// created inline, as QEMU's external snapshot commit does; a failure
// leaves it as it was.
func (g *Graph) reopenReadOnly(n *Node) {
	if n.state.readOnly {
		return
	}
	opts := inlineWithoutNames(n.own)
	opts["read-only"] = true
	if _, given := opts["backing"]; !given {
		if b := n.children["backing"]; b != nil {
			opts["backing"] = b.name
		} else if headerBacking(n) != "" {
			opts["backing"] = nil
		}
	}
	items, err := g.reopenTree(n, opts, opts, "", "", false)
	if err != nil {
		return
	}
	g.reopenNodes(items)
}

// inlineWithoutNames is o with the node names of the children it gives
// inline left out: a reopen names them again only by being inline (a
// name there would be a change of node-name, which reopen refuses).
func inlineWithoutNames(o Options) Options {
	out := o.Clone()
	for k, v := range out {
		var child Options
		switch v := v.(type) {
		case Options:
			child = v
		case map[string]any:
			child = Options(v)
		default:
			continue
		}
		child = inlineWithoutNames(child)
		delete(child, "node-name")
		out[k] = child
	}
	return out
}
