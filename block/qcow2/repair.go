package qcow2

// Repair: qemu-img check -r, QEMU's qcow2_check_refcounts with
// BDRV_FIX_LEAKS / BDRV_FIX_ERRORS. The references are counted by
// check.go's walk; refcounts that differ are set to the reference count
// through the write path's refcounts (refcount.go), then OFLAG_COPIED is
// fixed. What needs the refcount structure rebuilt (a refcount of 0 for
// a referenced cluster, broken refcount blocks) is rebuilt under -r all
// (rebuild.go) and refused under -r leaks, leaving the image as it was.

import (
	"encoding/binary"
	"errors"
	"io"

	"minivmm/block"
)

// RepairResult is a check with fixes: the check's result (of the fixing
// pass) and what was fixed.
type RepairResult struct {
	*CheckResult
	LeaksFixed       int64
	CorruptionsFixed int64
}

// Fix modes, QEMU's BDRV_FIX_LEAKS and BDRV_FIX_ERRORS.
const (
	FixLeaks  = 1
	FixErrors = 2
)

// errCheckIO is QEMU's -EIO from the check.
var errCheckIO = errors.New("Input/output error")

// Repair checks the qcow2 image in file (a protocol node the caller holds
// write permission on) and fixes what fix allows: QEMU's
// qcow2_check_refcounts with fixes, including the rebuild of the refcount
// structure (rebuild.go) under FixErrors. An error means the repair could
// not finish; a *CheckOpenError that the image could not be opened.
func Repair(file *block.Node, log io.Writer, fix int) (*RepairResult, error) {
	c, err := newChecker(file, log, fix, nil)
	if c == nil {
		return nil, err
	}
	rr := &RepairResult{CheckResult: c.res, CorruptionsFixed: c.corruptionsFixed + c.snapFixed}
	if err != nil {
		c.addSnapResult(c.res)
		return rr, err
	}
	h, cs := c.hdr, c.hdr.clusterSize()
	pre := *c.res
	highest, rebuild := c.compare()
	rebuild = rebuild || c.rebuildNeeded
	var img *image
	switch {
	case rebuild && fix&FixErrors != 0:
		if c, highest, err = c.rebuildAndRecount(rr); err != nil {
			return rr, err
		}
		h = c.hdr
		if img, err = repairImage(file, h, c.ext, c.snaps); err != nil {
			return rr, err
		}
	case rebuild:
		c.printf("ERROR need to rebuild refcount structures\n")
		c.res.CheckErrors++
		return rr, errCheckIO
	default:
		if c.res.CheckErrors > 0 {
			return rr, nil // counting was incomplete: nothing is fixed
		}
		if img, err = repairImage(file, h, c.ext, c.snaps); err != nil {
			return rr, err
		}
		if c.res.Leaks > 0 || c.res.Corruptions > 0 {
			*c.res = pre
			if err := c.fixRefcounts(img, fix, rr); err != nil {
				return rr, err
			}
			if err := img.rc.writeBack(); err != nil {
				return rr, err
			}
			if err := file.Flush(); err != nil {
				return rr, err
			}
		}
	}
	// Counted references may lie past the file's end (a table spilling
	// over it): nothing may be allocated there.
	img.rc.end = max(img.rc.end, int64(len(c.refs)))
	if err := c.fixCopied(img, fix, rr); err != nil {
		return rr, err
	}
	if err := file.Flush(); err != nil {
		return rr, err
	}
	fixedBefore := c.snapFixed
	err = c.fixSnapshotTable(img, c.snapTable)
	rr.CorruptionsFixed += c.snapFixed - fixedBefore
	c.addSnapResult(c.res)
	if err != nil {
		return rr, err
	}
	h = c.hdr
	c.res.ImageEndOffset = (highest + 1) * cs
	if c.res.CheckErrors == 0 && c.res.Corruptions == 0 && h.Version >= 3 &&
		h.IncompatibleFeatures&(incompatDirty|incompatCorrupt) != 0 {
		// qcow2_mark_clean, qcow2_mark_consistent.
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], h.IncompatibleFeatures&^(incompatDirty|incompatCorrupt))
		if err := img.patchHeader(72, b[:]); err != nil {
			return rr, err
		}
		if err := file.Flush(); err != nil {
			return rr, err
		}
	}
	return rr, nil
}

// rebuildAndRecount is the rebuild branch of qcow2_check_refcounts: a new
// refcount structure, the references counted again over it, and the old
// structure (now leaked) freed when fixing leaks. It returns the checker
// of the rebuilt image, whose result rr now holds.
func (c *checker) rebuildAndRecount(rr *RepairResult) (*checker, int64, error) {
	old := *c.res
	c.printf("Rebuilding refcount structure\n")
	if err := c.rebuild(); err != nil {
		return c, 0, err
	}
	// The header names the new table: count again over it.
	nc, err := newChecker(c.file, c.log, 0, c.snapTable)
	if nc == nil {
		var oe *CheckOpenError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		c.res.CheckErrors++
		return c, 0, err
	}
	nc.res.CheckErrors += old.CheckErrors
	nc.fix, nc.snapRes, nc.snapFixed = c.fix, c.snapRes, c.snapFixed
	rr.CheckResult = nc.res
	if err != nil {
		return nc, 0, err
	}
	var highest, freshLeaks int64
	if c.fix&FixLeaks != 0 {
		// The old structure is leaked now: free it. What stays leaked
		// was leaked by the rebuild itself.
		saved := *nc.res
		*nc.res = CheckResult{}
		img, err := repairImage(nc.file, nc.hdr, nc.ext, nc.snaps)
		if err != nil {
			return nc, 0, err
		}
		var still bool
		if highest, still, err = nc.fixLeaksAfterRebuild(img); err != nil {
			return nc, 0, err
		}
		if still {
			nc.printf("ERROR rebuilt refcount structure is still broken\n")
		}
		if err := img.rc.writeBack(); err != nil {
			return nc, 0, err
		}
		if err := nc.file.Flush(); err != nil {
			return nc, 0, err
		}
		freshLeaks = nc.res.Leaks
		*nc.res = saved
	} else {
		saved := *nc.res
		highest, _ = nc.compare()
		*nc.res = saved
	}
	if nc.res.Corruptions < old.Corruptions {
		rr.CorruptionsFixed += old.Corruptions - nc.res.Corruptions
	}
	if nc.res.Leaks < old.Leaks {
		rr.LeaksFixed += old.Leaks - nc.res.Leaks
	}
	nc.res.Leaks += freshLeaks
	return nc, highest, nil
}

// fixLeaksAfterRebuild is compare_refcounts with BDRV_FIX_LEAKS after a
// rebuild: it returns the highest cluster in use and whether a cluster is
// still referenced with refcount 0. The leaks it fixes are not counted
// (the rebuild made them).
func (c *checker) fixLeaksAfterRebuild(img *image) (int64, bool, error) {
	rc := img.rc
	rc.end = max(rc.end, int64(len(c.refs)))
	var highest int64
	still := false
	for i := int64(0); i < int64(len(c.refs)); i++ {
		r1, err := rc.get(i)
		if err != nil {
			c.printf("Can't get refcount for cluster %d: %s\n", i, err)
			c.res.CheckErrors++
			continue
		}
		r2 := c.refs[i]
		if r1 > 0 || r2 > 0 {
			highest = i
		}
		if r1 == r2 {
			continue
		}
		still = still || r1 == 0
		switch {
		case r1 != 0 && r1 > r2:
			c.printf("Repairing cluster %d refcount=%d reference=%d\n", i, r1, r2)
			if err := rc.set(i, r2); err == nil {
				c.discardFreed(i, r2)
				continue
			}
		case r1 < r2:
			c.printf("ERROR cluster %d refcount=%d reference=%d\n", i, r1, r2)
		default:
			c.printf("Leaked cluster %d refcount=%d reference=%d\n", i, r1, r2)
		}
		if r1 < r2 {
			c.res.Corruptions++
		} else {
			c.res.Leaks++
		}
	}
	return highest, still, nil
}

// repairImage makes an image for the write path's refcounts and overlap
// checks on file, without the driver's open (which refuses what a check
// repairs: corrupt images, snapshots).
func repairImage(file *block.Node, h *header, x *extensions, snaps []snapshot) (*image, error) {
	img := &image{file: file, hdr: h, ext: x, snapshots: snaps, writable: true,
		reportCorruption: func(string, int64, int64, bool) {}}
	img.geometry = newGeometry(h, int(h.clusterSize()))
	raw := make([]byte, int64(h.L1Size)*8)
	if err := readFile(file, raw, int64(h.L1TableOffset)); err != nil {
		return nil, err
	}
	img.l1 = make([]uint64, h.L1Size)
	for i := range img.l1 {
		img.l1[i] = binary.BigEndian.Uint64(raw[8*i:])
	}
	rc, err := newRefcounts(img)
	if err != nil {
		return nil, err
	}
	img.rc = rc
	rc.end = max(rc.end, (file.Length()+h.clusterSize()-1)/h.clusterSize())
	return img, nil
}

// fixRefcounts is compare_refcounts with fixes.
func (c *checker) fixRefcounts(img *image, fix int, rr *RepairResult) error {
	rc := img.rc
	rc.end = max(rc.end, int64(len(c.refs)))
	for i := int64(0); i < int64(len(c.refs)); i++ {
		r1, err := rc.get(i)
		if err != nil {
			c.printf("Can't get refcount for cluster %d: %s\n", i, err)
			c.res.CheckErrors++
			continue
		}
		r2 := c.refs[i]
		if r1 == r2 {
			continue
		}
		var fixed *int64
		switch {
		case r1 > r2 && fix&FixLeaks != 0:
			fixed = &rr.LeaksFixed
		case r1 < r2 && fix&FixErrors != 0:
			fixed = &rr.CorruptionsFixed
		}
		kind := "Leaked"
		if fixed != nil {
			kind = "Repairing"
		} else if r1 < r2 {
			kind = "ERROR"
		}
		c.printf("%s cluster %d refcount=%d reference=%d\n", kind, i, r1, r2)
		if fixed != nil {
			if err := rc.set(i, r2); err == nil {
				c.discardFreed(i, r2)
				*fixed++
				continue
			}
		}
		if r1 < r2 {
			c.res.Corruptions++
		} else {
			c.res.Leaks++
		}
	}
	return nil
}

// fixCopied is check_oflag_copied with fixes.
func (c *checker) fixCopied(img *image, fix int, rr *RepairResult) error {
	repair := fix&FixErrors != 0 ||
		fix&FixLeaks != 0 && c.res.CheckErrors == 0 && c.res.Corruptions == 0 && c.res.Leaks == 0
	if !repair {
		return c.scanCopied(img.l1, img.rc.get, nil)
	}
	return c.scanCopied(img.l1, img.rc.get, &copiedFixer{img: img, rr: rr})
}

// copiedFixer repairs the COPIED flags scanCopied finds wrong.
type copiedFixer struct {
	img *image
	rr  *RepairResult
}

// scanCopied is check_oflag_copied over the active L1 table l1: COPIED
// must be set exactly where the refcount is 1, on L2 tables and on the
// data clusters they map. Without a fixer it reports each mismatch as a
// corruption; with one it repairs it in the image.
func (c *checker) scanCopied(l1 []uint64, refcount func(cluster int64) (uint64, error), fx *copiedFixer) error {
	h := c.hdr
	verb := "ERROR"
	if fx != nil {
		verb = "Repairing"
	}
	l1Off := int64(h.L1TableOffset)
	for i, l1e := range l1 { // entries past it (past the end of the file) are zero

		l2 := int64(l1e & offsetMask)
		if l2 == 0 {
			continue
		}
		r, err := refcount(l2 >> h.ClusterBits)
		if err != nil {
			continue
		}
		if (r == 1) != (l1e&flagCopied != 0) {
			c.printf("%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d\n", verb, i, l1e, r)
			if fx != nil {
				ne := l1e &^ flagCopied
				if r == 1 {
					ne |= flagCopied
				}
				var b [8]byte
				binary.BigEndian.PutUint64(b[:], ne)
				if err := fx.img.writeMeta(b[:], l1Off+8*int64(i), olL1); err != nil {
					c.res.CheckErrors++
				} else {
					fx.img.l1[i] = ne
					fx.img.metaChanged()
					fx.rr.CorruptionsFixed++
				}
			} else {
				c.res.Corruptions++
			}
		}
		table, err := c.readL2(l2)
		if err != nil {
			c.printf("ERROR: Could not read L2 table: %s\n", err)
			c.res.CheckErrors++
			return err
		}
		n := h.clusterSize() / int64(8*c.g.entryWords)
		changed := int64(0)
		for j := int64(0); j < n; j++ {
			at := j * int64(c.g.entryWords) * 8
			e := binary.BigEndian.Uint64(table[at:])
			if t := c.clusterType(e); t != ctNormal && t != ctZeroAlloc {
				continue
			}
			r, err := refcount(int64(e&offsetMask) >> h.ClusterBits)
			if c.g.external {
				r, err = 1, nil // a data file's clusters: refcount 1 by definition
			}
			if err != nil {
				continue
			}
			if (r == 1) != (e&flagCopied != 0) {
				c.printf("%s OFLAG_COPIED data cluster: l2_entry=%x refcount=%d\n", verb, e, r)
				if fx != nil {
					ne := e &^ flagCopied
					if r == 1 {
						ne |= flagCopied
					}
					binary.BigEndian.PutUint64(table[at:], ne)
					changed++
				} else {
					c.res.Corruptions++
				}
			}
		}
		if changed > 0 {
			if l2&(h.clusterSize()-1) != 0 {
				c.printf("ERROR: Could not write L2 table; metadata overlap check failed: %s\n", "Input/output error")
				c.res.CheckErrors++
				return errCheckIO
			}
			if err := fx.img.writeMeta(table, l2, olL2); err != nil {
				c.printf("ERROR: Could not write L2 table: %s\n", err)
				c.res.CheckErrors++
				return err
			}
			fx.rr.CorruptionsFixed += changed
		}
	}
	return nil
}

// discardFreed discards a cluster whose refcount a repair dropped to 0, as
// QEMU's (QCOW2_DISCARD_ALWAYS; a file opened without discard=unmap
// ignores it). A failed discard changes nothing that matters.
func (c *checker) discardFreed(k int64, refcount uint64) {
	if refcount != 0 {
		return
	}
	cs := c.hdr.clusterSize()
	if (k+1)*cs <= c.file.Length() {
		_ = c.file.Discard(k*cs, cs)
	}
}
