package qcow2

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// Cached L2 slices are read by requests without a lock while the write
// path, holding a slice it has already copied and pinned for this
// write-back round, updates entries of it in place: both go through these
// atomic accessors, so a request sees an entry either before or after a
// change, never torn. (Slices are heap allocations of at least 512
// bytes, so entries at multiples of 8 are 8-byte aligned.)

var hostLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// loadEntry reads the big-endian 64-bit entry at t[off:].
func loadEntry(t []byte, off int) uint64 {
	w := t[off : off+8 : off+8] // bounds checked without a load
	v := atomic.LoadUint64((*uint64)(unsafe.Pointer(&w[0])))
	if hostLittleEndian {
		v = bits.ReverseBytes64(v)
	}
	return v
}

// storeEntry writes the big-endian 64-bit entry at t[off:].
func storeEntry(t []byte, off int, v uint64) {
	w := t[off : off+8 : off+8]
	if hostLittleEndian {
		v = bits.ReverseBytes64(v)
	}
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&w[0])), v)
}
