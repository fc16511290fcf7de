package qcow2

import (
	"errors"
	"fmt"

	"minivmm/block"
)

// cluster0 is the first cluster of an image, read and checked as far as
// QEMU's open checks it before anything sized by the header is allocated.
// The driver's open and Check both go through it (and finish), so that a
// header one refuses the other refuses too, in the same words.
type cluster0 struct {
	h    *header
	data []byte // what the file has of cluster 0
}

// readCluster0 reads and checks the fixed header: cluster size, header
// length, compression type and incompatible features.
func readCluster0(file *block.Node) (*cluster0, error) {
	first := make([]byte, knownHeaderLen)
	if err := readFile(file, first, 0); err != nil {
		return nil, fmt.Errorf("Could not read qcow2 header: %w", err)
	}
	h, err := parseHeader(first)
	if err != nil {
		return nil, err
	}
	if err := h.checkClusterBits(); err != nil {
		return nil, err
	}
	if err := h.checkLength(); err != nil {
		return nil, err
	}
	// Cluster 0 holds the header, its extensions and the backing file
	// name: at most 2 MiB, and only what the file has is read.
	c := &cluster0{h: h, data: make([]byte, min(h.clusterSize(), max(file.Length(), knownHeaderLen)))}
	if err := readFile(file, c.data, 0); err != nil {
		return nil, fmt.Errorf("Could not read qcow2 header: %w", err)
	}
	if h.HeaderLength > compressionByte {
		h.Tail = c.area(compressionByte, int64(h.HeaderLength))
	}
	if err := h.checkCompression(); err != nil {
		return nil, err
	}
	if unknown := h.IncompatibleFeatures &^ incompatKnown; unknown != 0 {
		x, _ := parseExtensions(h, c.area(int64(h.HeaderLength), h.extEnd()), true)
		return nil, unsupportedFeatures(x.Features, unknown)
	}
	return c, nil
}

// area is bytes [from, to) of cluster 0, zero-extended to its end.
func (c *cluster0) area(from, to int64) []byte {
	if to <= from {
		return nil
	}
	b := make([]byte, to-from)
	if from < int64(len(c.data)) {
		copy(b, c.data[from:min(to, int64(len(c.data)))])
	}
	return b
}

// finish reads what the header points to once its tables are checked:
// the extensions, the backing file name and the snapshot table.
func (c *cluster0) finish(file *block.Node) (x *extensions, backingName string, snaps []snapshot, err error) {
	h := c.h
	if x, err = parseExtensions(h, c.area(int64(h.HeaderLength), h.extEnd()), false); err != nil {
		return nil, "", nil, err
	}
	if h.BackingFileOffset != 0 {
		n := int64(h.BackingFileSize)
		if n > min(maxBackingNameLen, h.clusterSize()-int64(h.BackingFileOffset)) {
			return nil, "", nil, errors.New("Backing file name too long")
		}
		backingName = string(c.area(int64(h.BackingFileOffset), int64(h.BackingFileOffset)+n))
	}
	if snaps, err = readSnapshots(newChunkReader(file), h); err != nil {
		return nil, "", nil, err
	}
	return x, backingName, snaps, nil
}
