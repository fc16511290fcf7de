// Package filter is the block jobs' filter drivers: QEMU's commit_top
// (and, by the same shape, mirror_top), a node a job puts above the
// top of the chain it works on while it runs. A filter passes every
// request to its one child, "backing", and holds nothing itself: it is
// in the graph so that the graph reads as QEMU's does (query-named-
// block-nodes lists it, the overlay's backing link goes through it, its
// name is taken) and so that the job's end can take it out again.
package filter

import (
	"fmt"

	"minivmm/block"
)

// Drivers QEMU 7.2 names its job filters with.
const (
	CommitTop  = "commit_top"
	MirrorTop  = "mirror_top"
	CopyOnRead = "copy-on-read" // block-stream's; its child is "file"
)

func init() {
	block.Register(&block.Driver{
		Name:      CommitTop,
		Options:   map[string]block.OptType{"backing": block.OptChild},
		Required:  []string{"backing"},
		Open:      open,
		ChildPerm: childPerm,
	})
	// The filters that backends move onto have their child as "file",
	// the link the graph counts a writer down (QEMU's mirror_top names
	// it "backing"; only the graph's own bookkeeping sees the key).
	block.Register(&block.Driver{
		Name:      MirrorTop,
		Format:    true,
		Open:      open,
		ChildPerm: passPerm,
	})
	block.Register(&block.Driver{
		Name:      CopyOnRead,
		Format:    true,
		Options:   map[string]block.OptType{"bottom": block.OptString},
		Open:      openCOR,
		ChildPerm: corChildPerm,
	})
}

// passPerm: mirror_top and copy-on-read need of their child what their
// own users need (QEMU's bdrv_default_perms for a filtered child).
func passPerm(_ string, _ block.Options, _ bool, perm, shared block.Perms) (block.Perms, block.Perms) {
	return perm, shared
}

// childPerm is QEMU's bdrv_commit_top_child_perm: the filter needs
// nothing of its child and lets others do everything (the job takes
// what it needs itself).
func childPerm(string, block.Options, bool, block.Perms, block.Perms) (block.Perms, block.Perms) {
	return 0, block.PermAll
}

type image struct {
	child   *block.Node
	backing bool // the child is "backing" (commit_top, mirror_top)
	// copy-on-read: reads copy into the child what it does not hold
	// itself (with a bottom, only what the chain holds down to bottom);
	// endSerial ends the child's serialising.
	cor       bool
	bottom    *block.Node
	endSerial func()
}

// openCOR opens QEMU's copy-on-read filter: every read copies into the
// child what the child does not allocate itself. With "bottom" (a node
// of the child's backing chain), only what is allocated down to and
// including bottom is copied: block-stream's filter has the node above
// the stream's base as bottom, so a guest's reads during the stream copy
// what the stream copies and leave the base's data in the base.
func openCOR(o *block.OpenContext) (block.Image, error) {
	child := o.Child("file")
	f := &image{child: child, cor: true}
	if name, _ := o.Options.String("bottom", ""); name != "" {
		if f.bottom = o.LookupNode(name); f.bottom == nil {
			return nil, fmt.Errorf("Bottom node '%s' not found", name)
		}
	}
	f.endSerial = child.Serialise()
	return f, nil
}

func open(o *block.OpenContext) (block.Image, error) {
	if child := o.Child("backing"); child != nil {
		return &image{child: child, backing: true}, nil
	}
	return &image{child: o.Child("file")}, nil
}

func (f *image) ReadAt(p []byte, off int64) (int, error) {
	if f.cor && !f.child.ReadOnly() {
		return f.corRead(p, off)
	}
	return f.child.ReadAt(p, off)
}
func (f *image) WriteAt(p []byte, off int64) (int, error) { return f.child.WriteAt(p, off) }
func (f *image) Flush() error                             { return f.child.Flush() }
func (f *image) Length() (int64, error)                   { return f.child.Length(), nil }
func (f *image) Close() error {
	if f.endSerial != nil {
		f.endSerial()
	}
	return nil
}

func (f *image) WriteZeroes(off, n int64, unmap bool) error {
	return f.child.WriteZeroes(off, n, unmap)
}

func (f *image) Discard(off, n int64) error { return f.child.Discard(off, n) }

// BlockStatus: a filter whose child is its "backing" allocates nothing,
// so a chain walk goes on to the child, one layer down, as through
// QEMU's filters. One over its "file" (mirror_top, copy-on-read) ends a
// walk that follows backing links, so it answers for its child's whole
// chain: allocated where a layer of it is, zeroes where none is.
func (f *image) BlockStatus(off, n int64) (block.Status, int64, error) {
	if f.backing {
		st, l, err := f.child.BlockStatus(off, n)
		return block.Status{Data: st.Data, Zero: st.Zero, Offset: -1}, l, err
	}
	cs, l, err := block.StatusAbove(f.child, nil, off, n)
	return block.Status{Allocated: cs.Present, Data: cs.Data, Zero: cs.Zero, Depth: cs.Depth, Offset: -1}, l, err
}

// Filename is the child's, as QEMU's bdrv_refresh_filename gives a
// filter.
func (f *image) Filename() string { return f.child.Filename() }
