package qcow2

// ExpandError is a downgrade's failure to write out zero clusters, which
// QEMU reports as "Failed to turn zero into data clusters" with the errno
// of what failed.
type ExpandError struct{ Err error }

func (e *ExpandError) Error() string { return e.Err.Error() }
func (e *ExpandError) Unwrap() error { return e.Err }
