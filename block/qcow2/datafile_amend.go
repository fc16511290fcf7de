package qcow2

// qemu-img amend -o data_file=NAME,data_file_raw=off: the data file's
// name recorded in the header changes (or goes, with ""), and
// data-file-raw can be switched off, as QEMU's qcow2_amend_options
// allows; neither can be set on an image that does not have them.

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// checkAmendDataFile refuses what QEMU refuses, in its words, before
// anything changes.
func (img *image) checkAmendDataFile(o AmendOptions) error {
	if o.Downgrade && img.external() {
		return errors.New("Cannot downgrade an image with a data file")
	}
	if o.DataFile != nil && !img.external() {
		return errors.New("data-file can only be set for images that use an external data file")
	}
	if o.DataFileRaw != nil && *o.DataFileRaw && !img.dataRaw() {
		return errors.New("data-file-raw cannot be set on existing images")
	}
	return nil
}

// amendDataFile applies the data file options, held under wmu with
// everything written back.
func (img *image) amendDataFile(o AmendOptions) error {
	if o.DataFile != nil && (*o.DataFile != img.ext.DataFile || img.ext.HasDataFile != (*o.DataFile != "")) {
		if err := img.setDataFileName(*o.DataFile); err != nil {
			return err
		}
	}
	if o.DataFileRaw != nil && !*o.DataFileRaw && img.hdr.AutoclearFeatures&autoclearDataFileRaw != 0 {
		ac := img.hdr.AutoclearFeatures &^ autoclearDataFileRaw
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], ac)
		if err := img.patchHeader(88, b[:]); err != nil {
			return err
		}
		if err := img.syncFile(); err != nil {
			return err
		}
		img.hdr.AutoclearFeatures = ac
	}
	return nil
}

// setDataFileName rewrites the header extensions with the data file
// extension naming name (none for ""), where QEMU puts it: after the
// backing format, before the others. The header, its extensions and
// the backing file name are written in one write, made durable.
func (img *image) setDataFileName(name string) error {
	h := img.hdr
	cs := img.clusterSize
	c0 := make([]byte, cs)
	if err := readFile(img.file, c0, 0); err != nil {
		return err
	}
	var backingName []byte
	if h.BackingFileOffset != 0 {
		end := int64(h.BackingFileOffset) + int64(h.BackingFileSize)
		if end > cs {
			return corrupt("the backing file name runs past the first cluster")
		}
		backingName = append([]byte(nil), c0[h.BackingFileOffset:end]...)
	}
	be := binary.BigEndian
	var area []byte
	put := func(typ uint32, data []byte) {
		var hd [8]byte
		be.PutUint32(hd[:], typ)
		be.PutUint32(hd[4:], uint32(len(data)))
		area = append(area, hd[:]...)
		area = append(area, data...)
		area = append(area, make([]byte, (len(data)+7)&^7-len(data))...)
	}
	placed := false
	place := func() {
		if !placed && name != "" {
			put(extDataFile, []byte(name))
		}
		placed = true
	}
	for _, e := range img.ext.All {
		switch e.Type {
		case extDataFile:
			continue
		case extBackingFormat:
			put(e.Type, e.Data)
			continue
		}
		place()
		put(e.Type, e.Data)
	}
	place()
	area = append(area, make([]byte, 8)...) // the end mark
	hdrLen := int(h.HeaderLength)
	nameOff := hdrLen + len(area)
	if int64(nameOff+len(backingName)) > cs {
		return errors.New("Header extensions do not fit in the first cluster")
	}
	buf := make([]byte, nameOff+len(backingName))
	copy(buf, c0[:hdrLen])
	copy(buf[hdrLen:], area)
	if backingName != nil {
		copy(buf[nameOff:], backingName)
		be.PutUint64(buf[8:], uint64(nameOff))
	}
	// Whatever the old header held past the new one reads as zero.
	if old := int(h.extEnd()) + len(backingName); old > len(buf) && old <= int(cs) {
		buf = append(buf, make([]byte, old-len(buf))...)
	}
	if img.beforeWrite != nil {
		img.beforeWrite()
	}
	if _, err := img.file.WriteAt(buf, 0); err != nil {
		return fmt.Errorf("qcow2: could not write the header: %w", err)
	}
	if err := img.syncFile(); err != nil {
		return err
	}
	if backingName != nil {
		h.BackingFileOffset = uint64(nameOff)
	}
	x, err := parseExtensions(h, buf[hdrLen:nameOff], false)
	if err != nil {
		return err
	}
	img.ext = x
	return nil
}
