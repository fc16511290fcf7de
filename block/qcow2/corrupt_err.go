package qcow2

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// errDead is every request after a fatal corruption.
var errDead = fmt.Errorf("qcow2: the image was marked corrupt: %w", unix.ENOMEDIUM)

// IsCorrupt says whether err is metadata found corrupt (QEMU fails such
// a request with EIO, after its corruption message).
func IsCorrupt(err error) bool {
	var ce *corruptError
	return errors.As(err, &ce)
}

// signalCorruption tells of corrupt metadata a request found, as QEMU's
// qcow2_signal_corruption: on a writable image it is fatal (the image is
// marked corrupt, on disk too, and takes no more writes); on a read-only
// one it is reported, once. Called without img.wmu.
func (img *image) signalCorruption(err error) {
	if !IsCorrupt(err) {
		return
	}
	if !img.writable {
		img.signalCorruptionLocked(err)
		return
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.signalCorruptionLocked(err)
}

// signalCorruptionLocked is signalCorruption with img.wmu held (if the
// image is writable); err may be nil.
func (img *image) signalCorruptionLocked(err error) {
	var ce *corruptError
	if !errors.As(err, &ce) {
		return
	}
	if !img.writable {
		// Further non-fatal events are suppressed, as in QEMU.
		if img.signalled.CompareAndSwap(false, true) {
			img.reportCorruption(ce.msg, -1, -1, false)
		}
		return
	}
	if !img.corrupted {
		img.markCorrupt(ce.msg, -1, -1)
	}
}
