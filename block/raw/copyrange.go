package raw

import "minivmm/block"

// CopyRangeTo passes the copy to the file, through the window.
func (r *image) CopyRangeTo(off, n int64, copy block.HostCopyFunc) error {
	return r.file.CopyRangeTo(off+r.offset, n, copy)
}
