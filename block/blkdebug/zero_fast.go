package blkdebug

// WriteZeroesFast is WriteZeroes without fallback, rules checked the
// same way; the child decides whether it can.
func (img *image) WriteZeroesFast(off, n int64, unmap bool) error {
	if err := img.check(off, n, ioWriteZeroes); err != nil {
		return err
	}
	return img.child.WriteZeroesFast(off, n, unmap)
}
