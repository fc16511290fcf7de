package qcow2

import (
	"errors"

	"minivmm/block"
)

// PrepareReopen: becoming writable is checked here (and the image readied
// at the first write); becoming read-only writes back what is held in
// memory. The children the reopen names ("file", and "backing" or none)
// take over at Commit, when no request is in flight on the node. As in
// QEMU, a new file child is read with the metadata already in memory: it
// is meant to be the same image by another way (another fd, a filter).
func (img *image) PrepareReopen(r *block.ReopenRequest) (block.Pending, error) {
	img.wmu.Lock()
	defer img.wmu.Unlock()
	if d := r.Children["data-file"]; img.external() && d != img.data {
		return nil, errors.New("Cannot change the option 'data-file'") // as QEMU 7.2
	}
	// The options a reopen may change, checked as at open and in QEMU's
	// words (qcow2_update_options_prepare).
	cache, err := readCacheSizes(r.Options, img.hdr)
	if err != nil {
		return nil, err
	}
	if err := checkOtherOptions(r.Options, img.hdr); err != nil {
		return nil, err
	}
	lazy, _ := r.Options.Bool("lazy-refcounts", img.hdr.CompatibleFeatures&compatLazyRefcounts != 0)
	pass, err := readPassDiscard(r.Options, r.Unmap)
	if err != nil {
		return nil, err
	}
	p := &reopenPending{img: img, writable: img.writable, lazy: lazy, pass: pass, refcountBlocks: cache.refcountBlocks,
		file: r.Children["file"], backing: r.Children["backing"]}
	if cache.sliceBytes != int(img.sliceBytes) || cache.l2Slices != img.cache.max {
		// The L2 cache is remade at Commit: what it holds goes to disk
		// now (the node is drained: nothing is dirtied in between).
		if img.writable && img.rc != nil { // (nil: nothing written yet)
			if err := img.writeBack(); err != nil {
				return nil, err
			}
		}
		p.cache = &cache
	}
	if img.lazy && !lazy && img.writable && img.rc != nil && !img.corrupted {
		// Refcounts held back go to disk, and the dirty bit goes, before
		// they are written as they change (QEMU: qcow2_mark_clean).
		if err := img.markClean(); err != nil {
			return nil, err
		}
	}
	switch {
	case r.Writable && !img.writable:
		if err := img.checkWritable(); err != nil {
			return nil, err
		}
		p.writable = true
	case !r.Writable && img.writable:
		if img.rc != nil && !img.corrupted {
			if err := img.markClean(); err != nil {
				return nil, err
			}
		}
		p.writable = false
	}
	return p, nil
}

type reopenPending struct {
	img      *image
	writable bool
	lazy     bool         // lazy-refcounts
	cache    *cacheConfig // new L2 cache sizes, or nil

	pass           passDiscard // pass-discard-*
	refcountBlocks int         // refcount-cache-size (a smaller cache evicts as it is used)
	file           *block.Node
	backing        *block.Node
}

func (p *reopenPending) Commit() {
	p.img.wmu.Lock()
	defer p.img.wmu.Unlock()
	p.img.writable = p.writable
	p.img.lazy = p.lazy
	p.img.passDiscard, p.img.refcountBlocks = p.pass, p.refcountBlocks
	if c := p.cache; c != nil {
		p.img.geometry = newGeometry(p.img.hdr, c.sliceBytes)
		p.img.cache = newL2Cache(c.sliceBytes, c.l2Slices, p.img.cache.load)
	}
	if p.file != nil {
		if !p.img.external() {
			p.img.data = p.file // data clusters are in the file
		}
		p.img.file = p.file
	}
	p.img.backing = p.backing
}

func (p *reopenPending) Abort() {}

// BackingFile is the backing file name the header records ("" for none):
// a reopen of a node whose image names one must say what its backing is.
func (img *image) BackingFile() string { return img.backingName }
