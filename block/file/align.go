package file

import "minivmm/block"

// RefreshLimits declares the request alignment O_DIRECT needs, as probed
// at open or reopen (QEMU's raw_probe_alignment): the generic layer then
// pads and read-modify-writes unaligned requests above the driver, one
// serialised request at a time on the node, with the events blkdebug
// hears. Without O_DIRECT any byte goes (1).
func (img *image) RefreshLimits(l *block.Limits) {
	if img.align > 1 {
		l.RequestAlignment = int64(img.align)
	}
}
