package qtool

import (
	"errors"

	"minivmm/block"
)

// preallocChunk is the most zeroes one preallocating write carries.
const preallocChunk = 1 << 20

// GrowPreallocated grows node to size and preallocates the area the grow
// adds as QEMU's truncate with a preallocation mode does (qemu-img resize
// --preallocation, qemu-io truncate -m): metadata allocates a qcow2
// image's clusters without writing them (raw has no metadata: the caller
// refuses it first), falloc allocates (raw: fallocated zeroes; qcow2:
// clusters over fallocated host space) and full writes zeroes (qcow2:
// into the host clusters, as QEMU; the guest data stays what it was). The caller has refused
// preallocating a shrink.
func GrowPreallocated(node *block.Node, size int64, mode string) error {
	old := node.Length()
	if err := node.Truncate(size); err != nil {
		return err
	}
	// Only the whole sectors the grow added: the node's length is
	// rounded to them.
	end := node.Length()
	if mode == "off" || end <= old {
		return nil
	}
	if node.Driver() == "qcow2" {
		m := map[string]block.Prealloc{"metadata": block.PreallocMetadata, "falloc": block.PreallocFalloc, "full": block.PreallocFull}[mode]
		return node.Preallocate(old, end-old, m)
	}
	switch mode {
	case "metadata":
		return errors.New("Unsupported preallocation mode: metadata")
	case "falloc":
		// Allocated, not unmapped: the file driver fallocates them.
		return node.WriteZeroes(old, end-old, false)
	}
	zero := make([]byte, min(preallocChunk, end-old))
	for off := old; off < end; {
		n := min(int64(len(zero)), end-off)
		if _, err := node.WriteAt(zero[:n], off); err != nil {
			return err
		}
		off += n
	}
	return nil
}
