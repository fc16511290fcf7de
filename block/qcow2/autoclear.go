package qcow2

import (
	"encoding/binary"
	"fmt"

	"minivmm/block"
)

// ClearUnknownAutoclear clears the autoclear feature bits QEMU does not
// know (all but bitmaps and data-file-raw) in the header of the qcow2
// image in file, as QEMU's read-write open does: a writer that does not
// maintain a feature must say so. One sector write, flushed.
func ClearUnknownAutoclear(file *block.Node) error {
	sec := make([]byte, 512)
	if err := readFile(file, sec, 0); err != nil {
		return err
	}
	if binary.BigEndian.Uint32(sec) != magic || binary.BigEndian.Uint32(sec[4:]) < 3 {
		return nil
	}
	ac := binary.BigEndian.Uint64(sec[88:])
	known := ac & (autoclearBitmaps | autoclearDataFileRaw)
	if ac == known {
		return nil
	}
	binary.BigEndian.PutUint64(sec[88:], known)
	if _, err := file.WriteAt(sec, 0); err != nil {
		return fmt.Errorf("qcow2: could not clear the autoclear bits: %w", err)
	}
	return file.Flush()
}
