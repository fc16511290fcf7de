package guestmem

import "unsafe"

// hostAddr is where the region's first byte is mapped in this process:
// the "user address" a vhost-user front end built on this memory sends.
func (r *Region) hostAddr() uint64 {
	return uint64(uintptr(unsafe.Pointer(&r.mem[r.MmapOffset])))
}
