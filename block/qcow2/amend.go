package qcow2

// Changing an existing image's header options (qemu-img amend; QEMU's
// qcow2_amend_options): lazy refcounts on or off, and the refcount width
// with every refcount structure rewritten. Each change reaches the disk
// in one sector write of the header, after everything it points to is
// durable, so that a crash leaves the image as it was or as amended.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// AmendOptions are the options amend changes; nil leaves one as it is.
type AmendOptions struct {
	// Upgrade makes a version 2 image version 3 (compat=1.1), Downgrade
	// the other way (compat=0.10), after the other changes.
	Upgrade, Downgrade bool
	LazyRefcounts      *bool
	RefcountBits       *int
	// DataFile renames the external data file ("" drops the name);
	// DataFileRaw false turns data-file-raw off (datafile_amend.go).
	DataFile    *string
	DataFileRaw *bool
	// Progress, if set, is told the share done (0 to 1).
	Progress func(done float64)
}

// Amend changes the header options o names, in QEMU's order and with
// its messages for what the image cannot take.
func (img *image) Amend(o AmendOptions) error {
	if err := img.begin(); err != nil {
		return err
	}
	defer img.wmu.Unlock()
	h := img.hdr
	version := h.Version
	if o.Upgrade {
		version = 3
	}
	if o.Downgrade {
		version = 2
	}
	if o.LazyRefcounts != nil && *o.LazyRefcounts && version < 3 {
		return errors.New("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
	}
	if o.RefcountBits != nil {
		b := *o.RefcountBits
		if b <= 0 || b > 64 || b&(b-1) != 0 {
			return errors.New("Refcount width must be a power of two and may not exceed 64 bits")
		}
		if version < 3 && b != 16 {
			return errors.New("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
		}
	}
	if err := img.checkAmendDataFile(o); err != nil {
		return err
	}
	if err := img.writeBack(); err != nil {
		return err
	}
	if err := img.syncAll(); err != nil {
		return err
	}
	if err := img.amendDataFile(o); err != nil {
		return err
	}
	if o.Upgrade {
		if err := img.upgradeV3(); err != nil {
			return err
		}
	}
	if o.RefcountBits != nil {
		order := uint32(0)
		for 1<<order < *o.RefcountBits {
			order++
		}
		if order != h.RefcountOrder {
			if err := img.changeRefcountOrder(order, o.Progress); err != nil {
				return err
			}
		}
	}
	if o.LazyRefcounts != nil && !o.Downgrade {
		on := *o.LazyRefcounts
		if !on && h.IncompatibleFeatures&incompatDirty != 0 {
			if err := img.markClean(); err != nil {
				return err
			}
		}
		f := h.CompatibleFeatures &^ compatLazyRefcounts
		if on {
			f |= compatLazyRefcounts
		}
		if f != h.CompatibleFeatures {
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], f)
			if err := img.patchHeader(80, b[:]); err != nil {
				return err
			}
			if err := img.syncFile(); err != nil {
				return err
			}
			h.CompatibleFeatures = f
			img.lazy = on
		}
	}
	if o.Downgrade {
		return img.downgradeV2()
	}
	return nil
}

// changeRefcountOrder rewrites the refcounts with 2^order-bit entries
// (QEMU's qcow2_change_refcount_order): the new table and blocks go past
// the end of the file, counting everything but the old structures and
// counting themselves; once they are durable, one header sector write
// switches to them, and the old ones are free clusters.
func (img *image) changeRefcountOrder(order uint32, progress func(float64)) error {
	cs := img.clusterSize
	rc := img.rc
	end := max(rc.end, (img.file.Length()+cs-1)/cs)
	counts := make([]uint64, end)
	for k := range end {
		v, err := rc.get(k)
		if err != nil {
			return err
		}
		counts[k] = v
		if progress != nil && k%4096 == 0 {
			progress(0.5 * float64(k) / float64(end))
		}
	}
	// The old structures are free once the header no longer names them.
	for k := rc.tableOff / cs; k < rc.tableOff/cs+rc.tableClust; k++ {
		counts[k] = 0
	}
	for _, e := range rc.table {
		if off := int64(e & reftOffsetMask); off != 0 && off/cs < end {
			counts[off/cs] = 0
		}
	}
	newMax := uint64(math.MaxUint64)
	if order < 6 {
		newMax = 1<<(1<<order) - 1
	}
	for k, v := range counts {
		if v > newMax {
			return fmt.Errorf("Cannot decrease refcount entry width to %d bits: Cluster at offset %#x has a refcount of %d", 1<<order, int64(k)*cs, v)
		}
	}
	perBlock := cs * 8 >> order
	var nb, nt int64
	for {
		total := end + nb + nt
		b := (total + perBlock - 1) / perBlock
		t := (b*8 + cs - 1) / cs
		if b == nb && t == nt {
			break
		}
		nb, nt = b, t
	}
	tableOff := end * cs
	buf := make([]byte, (nt+nb)*cs)
	table, blocks := buf[:nt*cs], buf[nt*cs:]
	for k := end; k < end+nt+nb; k++ {
		counts = append(counts, 1)
	}
	for bi := range nb {
		binary.BigEndian.PutUint64(table[8*bi:], uint64(tableOff+(nt+bi)*cs))
		blk := blocks[bi*cs : (bi+1)*cs]
		for i := range perBlock {
			if k := bi*perBlock + i; k < int64(len(counts)) && counts[k] != 0 {
				setRefcountAt(blk, order, i, counts[k])
			}
		}
	}
	if err := img.checkedWrite(buf, tableOff, 0); err != nil {
		return err
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	if progress != nil {
		progress(0.9)
	}
	// One sector: the table's offset and size, and the width.
	if img.beforeWrite != nil {
		img.beforeWrite()
	}
	sec := make([]byte, 512)
	if err := readFile(img.file, sec, 0); err != nil {
		return err
	}
	binary.BigEndian.PutUint64(sec[48:], uint64(tableOff))
	binary.BigEndian.PutUint32(sec[56:], uint32(nt))
	binary.BigEndian.PutUint32(sec[96:], order)
	if _, err := img.file.WriteAt(sec, 0); err != nil {
		return err
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	h := img.hdr
	h.RefcountTableOffset, h.RefcountTableClusters, h.RefcountOrder = uint64(tableOff), uint32(nt), order
	nrc, err := newRefcounts(img)
	if err != nil {
		return err
	}
	nrc.deferred = rc.deferred
	img.rc = nrc
	img.metaChanged()
	if progress != nil {
		progress(1)
	}
	return nil
}
