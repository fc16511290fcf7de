package qcow2

// Refcounts for the write path: the refcount table in memory, refcount
// blocks through a small cache, entries of any width. Changes stay in the
// cache until it evicts them or the write path writes them back: before
// anything points to what they count (write.go's syncRefcounts), except
// with lazy refcounts while the image is marked dirty (a crash leaves
// the dirty bit, and the next writer rebuilds the refcounts).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
)

// refcounts is the image's refcount structures. A refcount may be
// written at any time once it is set: increments early is harmless, and
// callers drop references only once nothing on disk points to them.
type refcounts struct {
	img        *image
	order      uint32
	blockBits  uint32 // log2 of entries per refcount block
	max        uint64 // the largest refcount
	tableOff   int64
	tableClust int64
	table      []uint64
	blocks     map[int64][]byte // refcount block cache, by file offset
	dirty      map[int64]bool   // blocks changed in memory only
	deferred   bool             // lazy refcounts, dirty bit on disk: no syncRefcounts needed
	unsynced   bool             // blocks written since the last syncRefcounts (or writeBack's flush)
	hint       int64            // no free cluster below (a search start)
	end        int64            // first cluster index past everything allocated

	// The cache's bound (evict): when each block was last used.
	used map[int64]uint64
	tick uint64
	// mayFree: a reference held back may free a cluster (reuse.go).
	mayFree bool
	// Passing discards down (passdiscard.go): why add drops references
	// (within a snapshot operation: snapshot), and a batch's queue.
	reason   discardReason
	batch    bool
	discards []hostRange
}

func newRefcounts(img *image) (*refcounts, error) {
	h := img.hdr
	cs := h.clusterSize()
	r := &refcounts{
		img: img, order: h.RefcountOrder, blockBits: h.ClusterBits + 3 - h.RefcountOrder,
		tableOff: int64(h.RefcountTableOffset), tableClust: int64(h.RefcountTableClusters),
		blocks: map[int64][]byte{}, dirty: map[int64]bool{}, used: map[int64]uint64{},
	}
	r.max = math.MaxUint64
	if r.order < 6 {
		r.max = 1<<(1<<r.order) - 1
	}
	raw := make([]byte, r.tableClust*cs)
	if err := readFile(img.file, raw, r.tableOff); err != nil {
		return nil, fmt.Errorf("Could not read refcount table: %w", err)
	}
	r.table = make([]uint64, len(raw)/8)
	for i := range r.table {
		r.table[i] = binary.BigEndian.Uint64(raw[8*i:])
		// An unaligned block is found when used (refblockAt), as QEMU.
		if r.table[i]&reftReserved != 0 {
			return nil, corrupt("refcount table entry %d is invalid (%#x)", i, r.table[i])
		}
	}
	r.end = (img.file.Length() + cs - 1) / cs
	return r, nil
}

// setRefcountAt stores entry i of a refcount block of 2^order-bit entries.
func setRefcountAt(blk []byte, order uint32, i int64, v uint64) {
	switch order {
	case 0, 1, 2:
		bits := uint(1) << order
		perByte := int64(8 / bits)
		shift := uint(i%perByte) * bits
		mask := byte(1<<bits-1) << shift
		blk[i/perByte] = blk[i/perByte]&^mask | byte(v)<<shift&mask
	case 3:
		blk[i] = byte(v)
	case 4:
		binary.BigEndian.PutUint16(blk[2*i:], uint16(v))
	case 5:
		binary.BigEndian.PutUint32(blk[4*i:], uint32(v))
	default:
		binary.BigEndian.PutUint64(blk[8*i:], v)
	}
}

// block returns the refcount block at off, from the cache or the file.
func (r *refcounts) block(off int64) ([]byte, error) {
	r.tick++
	if b, ok := r.blocks[off]; ok {
		r.used[off] = r.tick
		return b, nil
	}
	if off&(r.img.clusterSize-1) != 0 {
		return nil, corrupt("Refblock offset %#x unaligned", off)
	}
	b := make([]byte, r.img.clusterSize)
	if err := readFile(r.img.file, b, off); err != nil {
		return nil, err
	}
	if err := r.evict(); err != nil {
		return nil, err
	}
	r.blocks[off] = b
	r.used[off] = r.tick
	return b, nil
}

// cacheNew puts a block just made (and written) into the cache, within
// its bound.
func (r *refcounts) cacheNew(off int64, b []byte) error {
	if err := r.evict(); err != nil {
		return err
	}
	r.tick++
	r.blocks[off], r.used[off] = b, r.tick
	return nil
}

// defaultRefcountBlocks is the refcount block cache's size unless
// refcount-cache-size (or cache-size) says: 32 blocks, where QEMU keeps
// 4 clusters' worth (with 4 KiB clusters, 4 blocks count 32 MiB of
// image, and writes across more evict at every turn).
const defaultRefcountBlocks = 32

// evict makes room for one more block in the cache (refcount-cache-size,
// in blocks): the least recently used go, written first if changed. A
// refcount block may be written at any time (refcounts are raised before
// what they count is pointed to, and dropped only once nothing on disk
// points to it), so this orders nothing.
func (r *refcounts) evict() error {
	limit := r.img.refcountBlocks
	if limit <= 0 {
		limit = defaultRefcountBlocks
	}
	for len(r.blocks) >= limit {
		victim, oldest := int64(-1), uint64(math.MaxUint64)
		for off := range r.blocks {
			if u := r.used[off]; u < oldest {
				victim, oldest = off, u
			}
		}
		if r.dirty[victim] {
			r.img.file.Event("refblock_update_part")
			if err := r.img.writeMeta(r.blocks[victim], victim, olRefblocks); err != nil {
				return fmt.Errorf("qcow2: could not write the refcount block at %#x: %w", victim, err)
			}
			delete(r.dirty, victim)
			r.unsynced = true
		}
		delete(r.blocks, victim)
		delete(r.used, victim)
	}
	return nil
}

// get is the refcount of cluster k.
func (r *refcounts) get(k int64) (uint64, error) {
	ti := k >> r.blockBits
	if ti >= int64(len(r.table)) || r.table[ti] == 0 {
		return 0, nil
	}
	b, err := r.refblockAt(ti)
	if err != nil {
		return 0, err
	}
	return refcountAt(b, r.order, k&(1<<r.blockBits-1)), nil
}

// set stores the refcount of cluster k, allocating a refcount block (and
// growing the table) if none covers it.
func (r *refcounts) set(k int64, v uint64) error {
	if v > r.max {
		return errors.New("qcow2: refcount overflow")
	}
	if v != 0 && len(r.discards) > 0 {
		r.flushDiscards() // none may hit a cluster taken again (passdiscard.go)
	}
	// With lazy refcounts the first change marks the image dirty; a
	// repair (the image dirty already) syncs as without.
	if r.img.lazy && !r.deferred && r.img.hdr.IncompatibleFeatures&incompatDirty == 0 {
		if err := r.img.markDirty(); err != nil {
			return err
		}
		r.deferred = true
	}
	ti := k >> r.blockBits
	if ti < int64(len(r.table)) && r.table[ti] != 0 {
		// QEMU's allocation has read the block already, looking for
		// free clusters: the events of the change come after the read.
		if _, err := r.refblockAt(ti); err != nil {
			return err
		}
	}
	r.img.file.Event("refblock_alloc") // at every change, as QEMU's alloc_refcount_block
	if ti >= int64(len(r.table)) {
		if v == 0 {
			return nil
		}
		if err := r.growTable(ti); err != nil {
			return err
		}
	}
	if r.table[ti] == 0 {
		if v == 0 {
			return nil
		}
		if err := r.newBlock(ti); err != nil {
			return err
		}
	}
	r.img.file.Event("refblock_load")
	b, err := r.refblockAt(ti)
	if err != nil {
		return err
	}
	off := int64(r.table[ti] & reftOffsetMask)
	i := k & (1<<r.blockBits - 1)
	setRefcountAt(b, r.order, i, v)
	r.dirty[off] = true
	if v == 0 && k < r.hint {
		r.hint = k
	}
	if k >= r.end {
		r.end = k + 1
	}
	return nil
}

// add changes the refcount of cluster k by delta (a drop for r.reason).
func (r *refcounts) add(k int64, delta int64) error { return r.addFor(k, delta, r.reason) }

// addFor is add, a drop to 0 discarding the cluster if why is passed
// down (passdiscard.go).
func (r *refcounts) addFor(k int64, delta int64, why discardReason) error {
	v, err := r.get(k)
	if err != nil {
		return err
	}
	nv := int64(v) + delta
	if nv < 0 {
		return corrupt("refcount of cluster %#x would drop below zero", k)
	}
	if err := r.set(k, uint64(nv)); err != nil {
		return err
	}
	if nv == 0 && delta < 0 {
		r.dropped(k, why)
	}
	return nil
}

// newBlock allocates the refcount block for table index ti, at the end
// of the image: written and synced (with its own refcount, wherever that
// is), then entered in the table (flushed).
func (r *refcounts) newBlock(ti int64) error {
	cs := r.img.clusterSize
	p := r.end
	r.end++
	b := make([]byte, cs)
	self := p>>r.blockBits == ti
	if self {
		setRefcountAt(b, r.order, p&(1<<r.blockBits-1), 1)
	} else if err := r.set(p, 1); err != nil {
		return err
	}
	if r.table[ti] != 0 { // the recursion covered it (cannot happen: p is past it)
		return r.set(p, 0)
	}
	// Until the table points to it, a failure gives the block back.
	abort := func(err error) error {
		if !self {
			r.release(p, 1)
		} else if r.end == p+1 {
			r.end = p
		}
		return err
	}
	if err := r.img.ensureFile((p + 1) * cs); err != nil {
		return abort(err)
	}
	r.img.file.Event("refblock_alloc_write")
	if err := r.img.writeMeta(b, p*cs, olRefblocks); err != nil {
		return abort(err)
	}
	if err := r.img.syncRefcounts(); err != nil {
		return abort(err)
	}
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], uint64(p*cs))
	r.img.file.Event("refblock_alloc_hookup")
	if err := r.img.writeMeta(e[:], r.tableOff+ti*8, olRefTable); err != nil {
		return abort(err)
	}
	if err := r.img.syncFile(); err != nil {
		return err
	}
	r.table[ti] = uint64(p * cs)
	r.img.metaChanged()
	return r.cacheNew(p*cs, b)
}

// growTable moves the refcount table to a larger one at the end of the
// image, holding at least index need: the new table and the refcount
// blocks covering it are written and flushed, then the header switched
// to it (flushed), then the old table's clusters freed.
func (r *refcounts) growTable(need int64) error {
	r.img.file.Event("reftable_grow")
	cs := r.img.clusterSize
	perCluster := cs / 8
	entries := max(int64(len(r.table))*2, need+1)
	entries = (entries + 2*perCluster + perCluster - 1) / perCluster * perCluster // room for the blocks it needs
	clusters := entries / perCluster
	if clusters*cs > maxRefTableBytes {
		return errors.New("qcow2: refcount table would exceed its maximum size")
	}
	table := make([]uint64, entries)
	copy(table, r.table)
	tOff := r.end
	next := tOff + clusters
	newBlocks := map[int64][]byte{}
	var oldSet []int64 // covered by existing blocks
	for c := tOff; c < next; c++ {
		ti := c >> r.blockBits
		if ti >= entries {
			return errors.New("qcow2: refcount table growth failed")
		}
		if table[ti] == 0 {
			table[ti] = uint64(next * cs)
			newBlocks[ti] = make([]byte, cs)
			next++
		}
		if b, ok := newBlocks[ti]; ok {
			setRefcountAt(b, r.order, c&(1<<r.blockBits-1), 1)
		} else {
			oldSet = append(oldSet, c)
		}
	}
	r.end = next
	set := 0
	// Until the header points to the new table, a failure gives back
	// what it took.
	abort := func(err error) error {
		for _, c := range oldSet[:set] {
			r.release(c, 1)
		}
		if r.end == next {
			r.end = tOff
		}
		return err
	}
	for _, c := range oldSet {
		if err := r.set(c, 1); err != nil {
			return abort(err)
		}
		set++
	}
	if err := r.img.ensureFile(next * cs); err != nil {
		return abort(err)
	}
	for ti, b := range newBlocks {
		r.img.file.Event("refblock_alloc_write_blocks")
		if err := r.img.writeMeta(b, int64(table[ti]), olRefblocks|olRefTable); err != nil {
			return abort(err)
		}
	}
	raw := make([]byte, clusters*cs)
	for i, e := range table {
		binary.BigEndian.PutUint64(raw[8*i:], e)
	}
	r.img.file.Event("refblock_alloc_write_table")
	if err := r.img.writeMeta(raw, tOff*cs, olRefblocks|olRefTable); err != nil {
		return abort(err)
	}
	if err := r.img.syncRefcounts(); err != nil {
		return abort(err)
	}
	var hf [12]byte
	binary.BigEndian.PutUint64(hf[:], uint64(tOff*cs))
	binary.BigEndian.PutUint32(hf[8:], uint32(clusters))
	r.img.file.Event("refblock_alloc_switch_table")
	if err := r.img.patchHeader(48, hf[:]); err != nil {
		return abort(err)
	}
	// The header no longer points to the old table on disk before its
	// clusters are freed (and may be reused).
	if err := r.img.syncFile(); err != nil {
		return err
	}
	oldOff, oldClusters := r.tableOff, r.tableClust
	r.table, r.tableOff, r.tableClust = table, tOff*cs, clusters
	r.img.metaChanged()
	for ti, b := range newBlocks {
		if err := r.cacheNew(int64(table[ti]), b); err != nil {
			return err
		}
	}
	for i := int64(0); i < oldClusters; i++ {
		if err := r.add(oldOff/cs+i, -1); err != nil {
			return err
		}
	}
	return nil
}

// alloc allocates one cluster (the first free one from the hint, else at
// the end) with refcount 1, and returns its file offset. The caller
// flushes before pointing anything at it.
func (r *refcounts) alloc() (int64, error) {
	r.img.file.Event("cluster_alloc")
	k := r.hint
	for ; k < r.end; k++ {
		v, err := r.get(k)
		if err != nil {
			return 0, err
		}
		if v == 0 {
			break
		}
	}
	r.hint = k + 1
	if k >= r.end {
		r.end = k + 1
	}
	if err := r.set(k, 1); err != nil {
		return 0, err
	}
	cs := r.img.clusterSize
	if err := r.img.ensureFile((k + 1) * cs); err != nil {
		r.release(k, 1)
		return 0, err
	}
	return k * cs, nil
}

// release gives back n clusters from k, allocated for a request that
// failed before anything on disk pointed to them, as QEMU's
// qcow2_alloc_cluster_abort: each refcount drops by the one reference
// taken (a fresh cluster's to 0), so that a failed write (ENOSPC) leaks
// nothing and the space is used again. Best effort: should this fail
// too, the clusters merely leak.
func (r *refcounts) release(k, n int64) {
	for i := k; i < k+n; i++ {
		if r.addFor(i, -1, discardNever) != nil {
			return
		}
	}
	// Freed at the end: the end comes back (the file is cut there).
	for r.end > k && r.end <= k+n {
		if v, err := r.get(r.end - 1); err != nil || v != 0 {
			break
		}
		r.end--
	}
}

// allocContiguous allocates n clusters in a row at the end of the image.
func (r *refcounts) allocContiguous(n int64) (int64, error) {
	r.img.file.Event("cluster_alloc")
	start := r.end
	r.end += n
	for k := start; k < start+n; k++ {
		if err := r.set(k, 1); err != nil {
			r.release(start, k-start)
			return 0, err
		}
	}
	cs := r.img.clusterSize
	if err := r.img.ensureFile((start + n) * cs); err != nil {
		r.release(start, n)
		return 0, err
	}
	return start * cs, nil
}

// dropUnusedBlocks takes out of the table the refcount blocks that count
// nothing but (maybe) themselves, as QEMU's qcow2_shrink_reftable, so
// that the file can end before them: each table entry is zeroed on disk
// before the block loses its reference.
func (r *refcounts) dropUnusedBlocks() error {
	cs := r.img.clusterSize
	for ti, e := range r.table {
		off := int64(e & reftOffsetMask)
		if off == 0 || ti == 0 {
			continue
		}
		b, err := r.block(off)
		if err != nil {
			return err
		}
		self := off/cs>>r.blockBits == int64(ti)
		unused := true
		for i := int64(0); i < 1<<r.blockBits && unused; i++ {
			v := refcountAt(b, r.order, i)
			unused = v == 0 || self && i == off/cs&(1<<r.blockBits-1) && v == 1
		}
		if !unused {
			continue
		}
		var z [8]byte
		if err := r.img.writeMeta(z[:], r.tableOff+int64(ti)*8, olRefTable); err != nil {
			return err
		}
		if err := r.img.syncFile(); err != nil {
			return err
		}
		r.table[ti] = 0
		r.img.metaChanged()
		delete(r.blocks, off)
		delete(r.dirty, off)
		if !self {
			if err := r.add(off/cs, -1); err != nil {
				return err
			}
		}
		r.hint = min(r.hint, off/cs)
	}
	return nil
}

// writeBack writes the blocks changed in memory only (not synced).
func (r *refcounts) writeBack() error {
	for _, off := range slices.Sorted(maps.Keys(r.dirty)) {
		r.img.file.Event("refblock_update_part")
		if err := r.img.writeMeta(r.blocks[off], off, olRefblocks); err != nil {
			return fmt.Errorf("qcow2: could not write the refcount block at %#x: %w", off, err)
		}
		delete(r.dirty, off)
		r.unsynced = true
	}
	return nil
}
