package qcow2

import "errors"

// CacheFlushError is a write-back at close that failed, named by the
// cache QEMU's qcow2 would have held it in ("L2 table", "refcount block"):
// qemu-img and qemu-io print one such line per cache that failed
// (qcow2_inactivate), and scripts compare them.
type CacheFlushError struct {
	Cache string
	Err   error
}

func (e *CacheFlushError) Error() string { return e.CloseStep() + ": " + e.Err.Error() }
func (e *CacheFlushError) Unwrap() error { return e.Err }

// CloseStep is the step that failed, in QEMU's words, without the cause.
func (e *CacheFlushError) CloseStep() string { return "Failed to flush the " + e.Cache + " cache" }

// closeWriteBack writes back what the image holds in memory and marks it
// clean, as QEMU's close does: a flush of both caches first (bdrv_close's,
// its failure unreported), then, if that failed, each cache written and
// flushed again on its own, the L2 tables (after the refcounts they
// depend on) before the refcount blocks, reporting each that still fails.
// With both written at the first try, the image is marked clean. Held
// under wmu.
func (img *image) closeWriteBack() error {
	rc := img.rc
	first := img.writeBack()
	if first == nil && len(rc.dirty) > 0 {
		if first = rc.writeBack(); first == nil {
			first = img.syncFile()
		}
	}
	if first != nil {
		var errs []error
		if err := img.flushL2Cache(); err != nil {
			errs = append(errs, &CacheFlushError{Cache: "L2 table", Err: err})
		}
		if err := img.flushRefcountCache(); err != nil {
			errs = append(errs, &CacheFlushError{Cache: "refcount block", Err: err})
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		// Written on the second try, which QEMU does not report: minivmm
		// does, and leaves the image dirty (a lazy-refcounts image is
		// repaired when next written; a close that succeeds clears it).
		return first
	}
	// QEMU ignores a failure to clear the dirty bit; minivmm reports it.
	return img.markClean()
}

// flushL2Cache writes the L2 tables held in memory (the refcounts first)
// and flushes the file.
func (img *image) flushL2Cache() error {
	if len(img.l2Dirty) > 0 || len(img.frees) > 0 {
		return img.writeBack()
	}
	return img.syncFile()
}

// flushRefcountCache writes the refcount blocks held in memory and
// flushes the file.
func (img *image) flushRefcountCache() error {
	if err := img.rc.writeBack(); err != nil {
		return err
	}
	return img.syncFile()
}
