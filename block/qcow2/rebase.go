package qcow2

// SetBacking: rewriting the backing file name and backing format that a
// qcow2 header records (qemu-img rebase, commit's "unsafe" half).

import (
	"encoding/binary"
	"errors"
	"fmt"

	"minivmm/block"
)

// SetBacking rewrites the backing file name and the backing format
// extension in the header of n, a qcow2 node opened read-write. name ""
// removes the backing file (and its format); format "" records none.
// Every other header field and extension, unknown ones included, is kept.
// The new header (with its extensions and name) is written in one write
// over the used part of cluster 0, zero-filling what the old one used
// beyond the new one's end, and flushed. The node's open backing child is
// not changed: reopen the image to read through the new backing file.
func SetBacking(n *block.Node, name, format string) error {
	img, ok := n.Image().(*image)
	if !ok {
		return fmt.Errorf("'%s' is not a qcow2 image", n.Name())
	}
	if len(name) > maxBackingNameLen {
		return errors.New("Backing file name too long")
	}
	if len(format) > maxBackingFormatLen {
		return fmt.Errorf("Backing format name too long: '%s'", format)
	}
	if name == "" {
		format = ""
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	if !img.writable {
		return errors.New("Block node is read-only")
	}
	if img.corrupted || img.hdr.IncompatibleFeatures&incompatCorrupt != 0 {
		return errCorruptWrite
	}
	h := img.hdr
	cs := h.clusterSize()
	cluster0 := make([]byte, min(cs, img.file.Length()))
	if err := readFile(img.file, cluster0, 0); err != nil {
		return fmt.Errorf("Could not read qcow2 header: %w", err)
	}
	hl := int64(h.HeaderLength)
	if int64(len(cluster0)) < hl {
		return errors.New("Could not read qcow2 header")
	}

	// The old layout: the extensions from header_length to their end
	// marker, and the backing file name.
	be := binary.BigEndian
	used := hl
	var keep [][]byte // raw extensions (header, data, padding) to keep
	end := int64(len(cluster0))
	if h.BackingFileOffset != 0 {
		end = min(end, int64(h.BackingFileOffset))
		used = max(used, int64(h.BackingFileOffset)+int64(h.BackingFileSize))
	}
	for off := hl; off+8 <= end; {
		typ, ln := be.Uint32(cluster0[off:]), int64(be.Uint32(cluster0[off+4:]))
		if typ == extEnd {
			used = max(used, off+8)
			break
		}
		next := off + 8 + (ln+7)&^7
		if off+8+ln > end {
			return errors.New("Header extension too large")
		}
		if typ != extBackingFormat {
			raw := make([]byte, next-off)
			copy(raw, cluster0[off:min(next, end)])
			keep = append(keep, raw)
		}
		off = next
		used = max(used, min(next, end))
	}
	used = min(used, int64(len(cluster0)))

	// The new layout: the backing format first (where QEMU puts it), the
	// rest in their order, the end marker, the name.
	buf := make([]byte, hl, cs)
	copy(buf, cluster0[:hl])
	if format != "" {
		ext := make([]byte, 8+(len(format)+7)&^7)
		be.PutUint32(ext[0:], extBackingFormat)
		be.PutUint32(ext[4:], uint32(len(format)))
		copy(ext[8:], format)
		buf = append(buf, ext...)
	}
	for _, raw := range keep {
		buf = append(buf, raw...)
	}
	buf = append(buf, make([]byte, 8)...) // end of extensions
	var bOff uint64
	if name != "" {
		bOff = uint64(len(buf))
		buf = append(buf, name...)
	}
	if int64(len(buf)) > cs {
		return errors.New("Header does not fit in the first cluster (backing file name too long?)")
	}
	be.PutUint64(buf[8:], bOff)
	be.PutUint32(buf[16:], uint32(len(name)))
	if int64(len(buf)) < used {
		buf = append(buf, make([]byte, used-int64(len(buf)))...)
	}
	if _, err := img.file.WriteAt(buf, 0); err != nil {
		return err
	}
	if err := img.syncFile(); err != nil {
		return err
	}

	h.BackingFileOffset, h.BackingFileSize = bOff, uint32(len(name))
	img.backingName = name
	x := *img.ext
	x.All = nil
	for _, e := range img.ext.All {
		if e.Type != extBackingFormat {
			x.All = append(x.All, e)
		}
	}
	x.BackingFormat, x.HasBackingFmt = format, format != ""
	if format != "" {
		x.All = append([]extension{{Type: extBackingFormat, Data: []byte(format)}}, x.All...)
	}
	img.ext = &x
	return nil
}
