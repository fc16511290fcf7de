package qcow2

import "errors"

// IsCorrupt says whether err is metadata found corrupt (QEMU fails such
// a request with EIO, after its corruption message).
func IsCorrupt(err error) bool {
	var ce *corruptError
	return errors.As(err, &ce)
}
