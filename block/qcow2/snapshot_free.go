package qcow2

import "encoding/binary"

// StepError is a snapshot operation that failed at a step QEMU names in
// its message ("Failed to free the cluster and L1 table"): the tools
// print the step and the errno beneath, as qemu-img does.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string    { return e.Step + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error    { return e.Err }
func (e *StepError) QEMUStep() string { return e.Step }

// freeClusters drops a reference of each cluster of [off, off+size), as
// QEMU's qcow2_free_clusters: a failure is reported (QEMU prints
// "qcow2_free_clusters failed") and otherwise ignored, the clusters left
// to leak.
func (img *image) freeClusters(off, size int64) {
	img.file.Event("cluster_free")
	cs := img.clusterSize
	for k := off / cs; k < (off+max(size, 1)+cs-1)/cs; k++ {
		if err := img.addRef(k, -1); err != nil {
			if img.warn != nil {
				img.warn("qcow2_free_clusters failed", err)
			}
			return
		}
	}
}

// dropSnapshotRefs drops the references a deleted snapshot's L1 table l1
// held, as QEMU's qcow2_update_snapshot_refcount(-1): in an L2 table the
// active L1 shares, an entry whose cluster is then the image's alone gets
// COPIED at once (written back with the L2 tables), so that a failure
// later leaves what QEMU's leaves.
func (img *image) dropSnapshotRefs(l1 []uint64) error {
	cs := img.clusterSize
	active := map[int64]int64{} // L2 table offset -> active L1 index
	img.l1mu.RLock()
	for i, e := range img.l1 {
		if off := int64(e & offsetMask); off != 0 {
			active[off] = int64(i)
		}
	}
	img.l1mu.RUnlock()
	t := make([]byte, cs)
	for i, l1e := range l1 {
		off := int64(l1e & offsetMask)
		if off == 0 {
			continue
		}
		if l1e&l1Reserved != 0 || off&(cs-1) != 0 {
			return corrupt("L1 entry %#x at index %#x is invalid", l1e, i)
		}
		if err := readFile(img.file, t, off); err != nil {
			return err
		}
		ai, shared := active[off]
		step := 8 * img.entryWords
		for j := 0; j < len(t); j += step {
			e := binary.BigEndian.Uint64(t[j:])
			if e&flagCompressed != 0 {
				coff, size := img.compressedRange(e)
				for c := coff / cs; c <= (coff+size-1)/cs; c++ {
					if err := img.addRef(c, -1); err != nil {
						return err
					}
				}
				continue
			}
			o := int64(e & offsetMask)
			if o == 0 {
				continue
			}
			if err := img.addRef(o/cs, -1); err != nil {
				return err
			}
			if !shared || e&flagCopied != 0 {
				continue
			}
			if v, err := img.rc.get(o / cs); err != nil {
				return err
			} else if v == 1 {
				var bm uint64
				if img.extL2 {
					bm = binary.BigEndian.Uint64(t[j+8:])
				}
				c := ai<<img.l2Bits + int64(j/step)
				if err := img.setL2Entry(off, c, e|flagCopied, bm); err != nil {
					return err
				}
			}
		}
		if err := img.addRef(off/cs, -1); err != nil {
			return err
		}
	}
	return nil
}
