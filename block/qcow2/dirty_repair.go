package qcow2

// The repair of a dirty image (lazy refcounts, a writer that died) before
// its first write: QEMU's qcow2_do_open runs qcow2_check with
// BDRV_FIX_ERRORS | BDRV_FIX_LEAKS, printing the check's messages on
// stderr. minivmm runs the same repair (repair.go, qemu-img check -r all)
// and passes its messages on as warnings, then reloads what the repair
// may have moved or changed: the header's refcount table, the L1 and L2
// tables' OFLAG_COPIED, the snapshot table.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// errDirtyRepair is QEMU's "Could not repair dirty image".
var errDirtyRepair = errors.New("Could not repair dirty image")

// repairDirty repairs the dirty image, with img.wmu held and img.rc nil.
func (img *image) repairDirty() error {
	var log bytes.Buffer
	rr, err := Repair(img.file, &log, FixErrors|FixLeaks)
	for _, line := range strings.SplitAfter(log.String(), "\n") {
		if line = strings.TrimSuffix(line, "\n"); line != "" && img.warn != nil {
			img.warn(line, nil)
		}
	}
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", errDirtyRepair, err)
	case rr.CheckErrors > 0:
		return fmt.Errorf("%w: %w", errDirtyRepair, errCheckIO)
	}
	return img.reloadAfterRepair()
}

// reloadAfterRepair rereads the metadata a repair writes. Readers may run
// meanwhile: the header fields they use (sizes, L1 offset) do not change,
// the L1 entries change in place under l1mu, and the L2 cache drops what
// it held, so that the next use reads the repaired slice.
func (img *image) reloadAfterRepair() error {
	c0, err := readCluster0(img.file)
	if err != nil {
		return err
	}
	_, _, snaps, err := c0.finish(img.file)
	if err != nil {
		return err
	}
	h := c0.h
	if h.L1TableOffset != img.hdr.L1TableOffset || h.L1Size != img.hdr.L1Size {
		return errors.New("qcow2: the repair moved the L1 table")
	}
	img.hdr.RefcountTableOffset = h.RefcountTableOffset
	img.hdr.RefcountTableClusters = h.RefcountTableClusters
	img.hdr.IncompatibleFeatures = h.IncompatibleFeatures
	img.hdr.SnapshotsOffset, img.hdr.NbSnapshots = h.SnapshotsOffset, h.NbSnapshots
	img.snapshots = snaps

	img.l1mu.RLock()
	n := len(img.l1)
	img.l1mu.RUnlock()
	n = min(n, int(h.L1Size), int(max(0, img.file.Length()-int64(h.L1TableOffset))/8))
	raw := make([]byte, n*8)
	if err := readFile(img.file, raw, int64(h.L1TableOffset)); err != nil {
		return fmt.Errorf("Could not read L1 table: %w", err)
	}
	img.l1mu.Lock()
	for i := range n {
		img.l1[i] = binary.BigEndian.Uint64(raw[8*i:])
	}
	img.l1mu.Unlock()

	c := img.cache
	c.mu.Lock()
	for off, s := range c.entries {
		if !s.pinned {
			c.remove(off)
		}
	}
	c.mu.Unlock()
	img.metaChanged()
	return nil
}
