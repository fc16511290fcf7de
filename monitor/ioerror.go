package monitor

import (
	"errors"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/qemuopen"
)

// writeBackErrorData is QEMU's BLOCK_IO_ERROR data, in QEMU 7.2's member
// order, for a node that failed to write back what it held: a write, and
// reported (nothing can be stopped or retried at a close). QEMU sends
// nospace only where the device keeps an I/O status, true or false;
// nothing here has one, so minivmm sends it only when it is true, as the
// one thing a manager acts on (grow the volume).
func writeBackErrorData(e block.WriteBackError) Obj {
	errno := unix.EIO // for an error that carries no errno
	errors.As(e.Err, &errno)
	data := Obj{{"device", e.Device}, {"node-name", e.Node}, {"operation", "write"}, {"action", "report"}}
	if errno == unix.ENOSPC {
		data = append(data, Member{"nospace", true})
	}
	return append(data, Member{"reason", qemuopen.Strerror(errno)})
}
