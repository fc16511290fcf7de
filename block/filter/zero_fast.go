package filter

// WriteZeroesFast passes a no-fallback zero write to the child, as
// QEMU's filters pass BDRV_REQ_NO_FALLBACK.
func (f *image) WriteZeroesFast(off, n int64, unmap bool) error {
	return f.child.WriteZeroesFast(off, n, unmap)
}
