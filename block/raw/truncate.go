package raw

import (
	"errors"

	"minivmm/block"
)

// Truncate resizes the file under the image, as QEMU's raw_co_truncate:
// refused when the image's size was given as an option.
func (r *image) Truncate(size int64) error {
	if r.fixed {
		return errors.New("Cannot resize fixed-size raw disks")
	}
	if err := r.file.Truncate(size + r.offset); err != nil {
		return err
	}
	r.size = size
	return nil
}

var _ block.Truncater = (*image)(nil)
