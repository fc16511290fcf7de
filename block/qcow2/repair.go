package qcow2

// Repair: qemu-img check -r, QEMU's qcow2_check_refcounts with
// BDRV_FIX_LEAKS / BDRV_FIX_ERRORS. The references are counted by
// check.go's walk; refcounts that differ are set to the reference count
// through the write path's refcounts (refcount.go), then OFLAG_COPIED is
// fixed. What needs the refcount structure rebuilt (a refcount of 0 for
// a referenced cluster under -r leaks, broken refcount blocks) is refused
// and leaves the image as it was.

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
// write permission on) and fixes what fix allows. An error means the
// repair could not finish; a *CheckOpenError that the image could not be
// opened.
func Repair(file *block.Node, log io.Writer, fix int) (*RepairResult, error) {
	c, err := newChecker(file, log)
	if c == nil {
		return nil, err
	}
	rr := &RepairResult{CheckResult: c.res}
	if err != nil {
		return rr, err
	}
	h, cs := c.hdr, c.hdr.clusterSize()
	rebuild := c.refblocksBroken() // check_refblocks' rebuild conditions
	pre := *c.res
	highest := c.compare()
	for k := range c.refs {
		if c.refs[k] != 0 {
			if r, err := c.refcount(int64(k)); err == nil && r == 0 {
				rebuild = true // compare_refcounts: refcount 0, referenced
			}
		}
	}
	if c.res.CheckErrors > 0 {
		return rr, nil // counting was incomplete: nothing is fixed
	}
	if rebuild && (fix&FixErrors == 0 || c.refblocksBroken()) {
		c.printf("ERROR need to rebuild refcount structures\n")
		c.res.CheckErrors++
		return rr, errCheckIO
	}
	img, err := repairImage(file, h, c.ext, c.snaps)
	if err != nil {
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
	if err := c.fixCopied(img, fix, rr); err != nil {
		return rr, err
	}
	if err := file.Flush(); err != nil {
		return rr, err
	}
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

// refblocksBroken: a refcount table entry or refcount block that only a
// rebuild of the refcount structure could fix (minivmm does not rebuild).
func (c *checker) refblocksBroken() bool {
	cs := c.hdr.clusterSize()
	for _, e := range c.reftable {
		off := int64(e & reftOffsetMask)
		k := off >> c.hdr.ClusterBits
		if e&reftReserved != 0 || off&(cs-1) != 0 || k >= int64(len(c.refs)) || off != 0 && c.refs[k] != 1 {
			return true
		}
	}
	return false
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
