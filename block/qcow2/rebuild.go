package qcow2

// Rebuilding the refcount structure (qemu-img check -r all when the
// refcounts are broken beyond repair in place: a referenced cluster with
// refcount 0, a refcount block that is unaligned or shared), as QEMU 7.2's
// rebuild_refcount_structure does it: new refcount blocks and a new
// refcount table made from the references the check counted, placed in
// clusters nothing references, and the header switched to them. The old
// structure is left as it was (leaked: the leak fix after the rebuild
// frees it), so a crash at any point leaves either the old image or the
// new one. Unlike QEMU, which writes the header without flushing what it
// points to first, the new structure is made durable before the header
// names it.

import (
	"encoding/binary"

	"minivmm/block"
)

// rebuilder holds the new reftable while the refcount blocks are placed
// and written.
type rebuilder struct {
	c        *checker
	cs       int64
	perBlock int64 // refcount entries per refcount block
	reftable []uint64
}

// alloc is alloc_clusters_imrt: n contiguous clusters free in the counted
// references at or after *firstFree (growing the count past the file's
// end if need be), taken (refcount 1); *firstFree moves to the first gap.
func (r *rebuilder) alloc(n int64, firstFree *int64) int64 {
	c := r.c
	k, run, first := *firstFree, int64(0), true
	for ; k < int64(len(c.refs)) && run < n; k++ {
		if c.refs[k] == 0 {
			run++
			if first {
				*firstFree, first = k, false
			}
		} else {
			run = 0
		}
	}
	if run < n {
		want := k + n - run
		c.refs = append(c.refs, make([]uint64, want-int64(len(c.refs)))...)
		k = want
		run = n
	}
	k -= run
	for i := int64(0); i < n; i++ {
		c.refs[k+i] = 1
	}
	return k * r.cs
}

// refblock encodes the counted references of refcount block idx.
func (r *rebuilder) refblock(idx int64) []byte {
	c := r.c
	b := make([]byte, r.cs)
	start := idx * r.perBlock
	for i := int64(0); i < r.perBlock && start+i < int64(len(c.refs)); i++ {
		if v := c.refs[start+i]; v != 0 {
			setRefcountAt(b, c.hdr.RefcountOrder, i, v)
		}
	}
	return b
}

// writeRefblocks is rebuild_refcounts_write_refblocks: for each refcount
// block covering a used cluster of [first, end), a cluster for it (unless
// the table has one already) and the block written. It says whether the
// table grew.
func (r *rebuilder) writeRefblocks(first, end int64) (bool, error) {
	c := r.c
	var firstFree int64
	grown := false
	for k := first; k < end; k++ {
		if k >= int64(len(c.refs)) || c.refs[k] == 0 {
			continue
		}
		idx := k / r.perBlock
		start := idx * r.perBlock
		var off int64
		if idx < int64(len(r.reftable)) && r.reftable[idx] != 0 {
			off = int64(r.reftable[idx])
		} else {
			firstFree = max(firstFree, start)
			off = r.alloc(1, &firstFree)
			// The block that counts this one must be written too.
			end = max(end, off/r.cs+1)
			if idx >= int64(len(r.reftable)) {
				n := ((idx+1)*8 + r.cs - 1) / r.cs * r.cs / 8
				r.reftable = append(r.reftable, make([]uint64, n-int64(len(r.reftable)))...)
				grown = true
			}
			r.reftable[idx] = uint64(off)
		}
		if err := writeGrowing(c.file, r.refblock(idx), off); err != nil {
			c.printf("ERROR writing refblock: %s\n", err)
			return false, err
		}
		k = start + r.perBlock - 1
	}
	return grown, nil
}

// rebuild is rebuild_refcount_structure over the references c counted
// (c.refs, which it extends with what it allocates).
func (c *checker) rebuild() error {
	cs := c.hdr.clusterSize()
	r := &rebuilder{c: c, cs: cs, perBlock: 1 << c.refblockBits}
	if _, err := r.writeRefblocks(0, int64(len(c.refs))); err != nil {
		c.res.CheckErrors++
		return err
	}
	// The table's own clusters need counting in the blocks: place it, write
	// the blocks of its range again, and place it anew while that grows it.
	var tableOff, tableClusters int64
	for {
		tableClusters = (int64(len(r.reftable))*8 + cs - 1) / cs
		var firstFree int64
		tableOff = r.alloc(tableClusters, &firstFree)
		grown, err := r.writeRefblocks(tableOff/cs, tableOff/cs+tableClusters)
		if err != nil {
			c.res.CheckErrors++
			return err
		}
		if !grown {
			break
		}
	}
	buf := make([]byte, tableClusters*cs)
	for i, e := range r.reftable {
		binary.BigEndian.PutUint64(buf[8*i:], e)
	}
	if err := writeGrowing(c.file, buf, tableOff); err != nil {
		c.printf("ERROR writing reftable: %s\n", err)
		return err
	}
	// Durable before the header points to it.
	if err := c.file.Flush(); err != nil {
		c.printf("ERROR writing reftable: %s\n", err)
		return err
	}
	// refcount_table_offset and refcount_table_clusters, in the header's
	// first sector: one write.
	sec := make([]byte, 512)
	if err := readFile(c.file, sec, 0); err != nil {
		c.printf("ERROR setting reftable: %s\n", err)
		return err
	}
	binary.BigEndian.PutUint64(sec[48:], uint64(tableOff))
	binary.BigEndian.PutUint32(sec[56:], uint32(tableClusters))
	if _, err := c.file.WriteAt(sec, 0); err != nil {
		c.printf("ERROR setting reftable: %s\n", err)
		return err
	}
	if err := c.file.Flush(); err != nil {
		c.printf("ERROR setting reftable: %s\n", err)
		return err
	}
	return nil
}

// writeGrowing writes p at off, growing the file first where p ends past
// it (the block layer refuses writes past a node's end; QEMU's writes grow
// the file to exactly there).
func writeGrowing(file *block.Node, p []byte, off int64) error {
	if end := off + int64(len(p)); end > file.Length() {
		if err := file.Truncate(end); err != nil {
			return err
		}
	}
	_, err := file.WriteAt(p, off)
	return err
}
