package raw

// WriteZeroesFast passes the no-fallback request down, as QEMU's raw
// format does (its supported_zero_flags are its file's).
func (r *image) WriteZeroesFast(off, n int64, unmap bool) error {
	return r.file.WriteZeroesFast(off+r.offset, n, unmap)
}
