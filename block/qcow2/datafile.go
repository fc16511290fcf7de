package qcow2

// External data files (incompatible feature bit 2, QEMU's data_file):
// the guest data clusters live in a second file, the "data-file" child,
// at host offsets equal to their guest offsets; the qcow2 file holds only
// metadata. Data clusters then have no refcounts, compressed clusters and
// internal snapshots cannot exist, and with data-file-raw (autoclear bit
// 1) the data file stays a valid raw image of the guest disk.
//
// Which node holds a cluster's data is decided here only: img.data is the
// data file, or the file child itself when there is none, and every path
// that maps a guest cluster to host bytes (read, write, copy-on-write,
// zero writes, discards, block status, check) asks these helpers.

import (
	"encoding/binary"
	"errors"

	"minivmm/block"
)

// Refusals in QEMU's words.
var (
	errNeedDataFile    = errors.New("'data-file' is required for this image")
	errDataFileOption  = errors.New("'data-file' can only be set for images with an external data file")
	errRawNeedsData    = errors.New("data-file-raw requires a data file")
	errDataFileSnap    = notSupported("Operation not supported")
	errDataFileCompose = notSupported("Operation not supported")
)

// openDataFile sets img.data: the node the data-file option names (the
// graph opened it, as a reference or inline), else the file the header's
// data file extension names, opened as a protocol node (never probed:
// QEMU opens it as raw bytes) through the graph's open path, so that
// fdsets work for it as for any child. Relative names are opened as
// given, from the working directory, as QEMU 7.2 does.
func (img *image) openDataFile(o *block.OpenContext) error {
	given := o.Child("data-file")
	if img.hdr.IncompatibleFeatures&incompatDataFile == 0 {
		if given != nil {
			return errDataFileOption
		}
		if img.hdr.AutoclearFeatures&autoclearDataFileRaw != 0 {
			return errRawNeedsData
		}
		img.data = img.file
		return nil
	}
	if given == nil && img.ext.HasDataFile {
		name := img.ext.DataFile
		n, err := o.OpenChild("data-file", block.Options{"driver": block.ProtocolFor(name), "filename": name})
		if err != nil {
			return err
		}
		given = n
	}
	if given == nil {
		return errNeedDataFile
	}
	img.data = given
	return nil
}

// external reports an image whose data clusters live in a data file.
func (img *image) external() bool { return img.hdr.IncompatibleFeatures&incompatDataFile != 0 }

// dataRaw reports data-file-raw: the data file is the guest disk as is.
func (img *image) dataRaw() bool {
	return img.external() && img.hdr.AutoclearFeatures&autoclearDataFileRaw != 0
}

// DataFile names the data file as the header records it ("" for none)
// and says whether it is kept raw (img info's "data file" lines).
func (img *image) DataFile() (name string, raw, has bool) {
	if !img.external() {
		return "", false, false
	}
	return img.ext.DataFile, img.dataRaw(), true
}

// allocData picks the host cluster for guest cluster c: in a data file
// its own offset, with no refcount; else a free cluster of the file.
func (img *image) allocData(c int64) (int64, error) {
	if img.external() {
		img.file.Event("cluster_alloc")
		return c << img.clusterBits, nil
	}
	return img.rc.alloc()
}

// releaseData gives back a cluster allocDat took for a write that failed
// before anything pointed to it.
func (img *image) releaseData(host int64) {
	if !img.external() {
		img.rc.release(host/img.clusterSize, 1)
	}
}

// checkDataHost refuses an L2 entry of an image with a data file that
// does not map its guest cluster to the same host offset (QEMU marks the
// image corrupt for it), and compressed entries, which such an image
// cannot have.
func (img *image) checkDataHost(kind extentKind, host, guest int64) error {
	if !img.external() {
		return nil
	}
	switch {
	case kind == extCompressed:
		return corrupt("Compressed cluster entry found in image with external data file (guest offset %#x)", guest)
	case kind == extData && host != guest:
		return corrupt("External data file host cluster offset %#x does not match guest cluster offset: %#x, compressed cluster?",
			host&^(img.clusterSize-1), guest&^(img.clusterSize-1))
	}
	return nil
}

// readData reads guest data at host offset off of the data node.
func (img *image) readData(p []byte, off int64) error {
	img.file.Event("read_aio")
	return readFile(img.data, p, off)
}

// writeData writes guest data at host offset off: into the file through
// the overlap check, or into the data file, grown as needed (a data file
// has no metadata to overlap; QEMU skips the check for it).
func (img *image) writeData(p []byte, off int64) error {
	img.file.Event("write_aio")
	if !img.external() {
		return img.checkedWrite(p, off, 0)
	}
	if img.corrupted {
		return errVersionCorrupt
	}
	if img.beforeWrite != nil {
		img.beforeWrite()
	}
	if end := off + int64(len(p)); end > img.data.Length() {
		if err := img.data.Truncate(end); err != nil {
			return err
		}
	}
	_, err := img.data.WriteAt(p, off)
	return err
}

// syncData flushes the data file before the metadata that will point
// into it is written: the data must be durable first.
func (img *image) syncData() error {
	if !img.external() {
		return nil
	}
	if err := img.data.Flush(); err != nil {
		img.flushErr = err
		return err
	}
	return nil
}

// zeroData is a zero write's part in the data file: with data-file-raw
// the data file itself must read as zeroes there (QEMU writes zeroes to
// it first); otherwise nothing.
func (img *image) zeroData(off, n int64, unmap bool) error {
	if !img.dataRaw() {
		return nil
	}
	n = min(n, max(0, img.data.Length()-off))
	if n <= 0 {
		return nil
	}
	return img.data.WriteZeroes(off, n, unmap)
}

// discardData keeps a raw data file a raw image of the disk across a
// discard: what the discard makes read as zeroes (whole clusters, or
// subclusters with extended L2; the tail at the image's end) reads as
// zeroes there too, written first as for zero writes. QEMU gets that
// from passing the discard down, which its pass-discard-request does
// with discard=unmap; minivmm passes no discard down otherwise
// (pass-discard-*=off), in a data file as in the image's file.
func (img *image) discardData(off, n int64) error {
	if !img.dataRaw() {
		return nil
	}
	g := img.clusterSize
	if img.extL2 {
		g = int64(1) << img.scBits
	}
	start, end := (off+g-1)/g*g, (off+n)/g*g
	if off+n >= img.length {
		end = off + n
	}
	if end <= start {
		return nil
	}
	return img.zeroData(start, end-start, true)
}

// childPerm is QEMU's rule for qcow2's children: the data file holds
// guest data only (BDRV_CHILD_DATA), the file and backing children as
// for any format.
func childPerm(role string, o block.Options, writable bool, perm, shared block.Perms) (block.Perms, block.Perms) {
	if role == "data-file" {
		return block.StoragePerms(false, true, writable, perm, shared)
	}
	return block.DefaultChildPerm(role, o, writable, perm, shared)
}

// mapsHost reports a (non-compressed) L2 entry that maps a host cluster.
// Offset 0 means none, except in a data file, where it is the first
// cluster and COPIED tells the two apart: every data cluster there has
// refcount 1 (QEMU's qcow2_get_cluster_type).
func (g *geometry) mapsHost(e uint64) bool {
	return e&offsetMask != 0 || g.external && e&flagCopied != 0 && e&flagCompressed == 0
}

// DataFileOf reads the header of the qcow2 image in file (a protocol
// node): whether it has an external data file and the name its header
// extension records ("" if none). Tools that read an image's metadata
// themselves (img check) open the data file by it, as QEMU's open does.
func DataFileOf(file *block.Node) (name string, external bool, err error) {
	c0, err := readCluster0(file)
	if err != nil {
		return "", false, err
	}
	if c0.h.IncompatibleFeatures&incompatDataFile == 0 {
		return "", false, nil
	}
	x, _, _, err := c0.finish(file)
	if err != nil {
		return "", true, err
	}
	return x.DataFile, true, nil
}

// checkDataFile refuses data file options QEMU's create refuses, and
// makes data-file-raw preallocate the metadata, as QEMU does: every
// cluster then maps to its own offset in the data file, which is so a
// raw image of the disk from the start.
func (o *CreateOptions) checkDataFile() error {
	switch {
	case o.DataFileRaw && o.DataFile == "":
		return errors.New("data-file-raw requires data-file")
	case o.DataFile != "" && o.Version < 3:
		return errors.New("External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)")
	case o.DataFileRaw && o.BackingFile != "":
		return errors.New("Backing file and data-file-raw cannot be used at the same time")
	}
	if o.DataFileRaw && o.Preallocation == "off" {
		o.Preallocation = "metadata"
	}
	return nil
}

// resizeData follows a resize of the image (err: how it went) with its
// data file, which QEMU resizes to the new size too: a raw data file
// stays the disk's size.
func (img *image) resizeData(size int64, err error) error {
	if err != nil || !img.external() || img.data.Length() == size {
		return err
	}
	return img.data.Truncate(size)
}

// HeaderDataFile reads the first bytes of a qcow2 image (at least 104):
// whether its header says the data clusters are in an external data
// file, and the image's virtual size. Anything else (not qcow2, version
// 2, too short) is false.
func HeaderDataFile(first []byte) (size int64, external bool) {
	be := binary.BigEndian
	if len(first) < 104 || be.Uint32(first) != magic || be.Uint32(first[4:]) < 3 {
		return 0, false
	}
	return int64(be.Uint64(first[24:]) &^ 511), be.Uint64(first[72:])&incompatDataFile != 0
}
