package main

import "fmt"

// probedWarning is what -drive says of an image whose format was probed,
// as QEMU says it: only a probed raw image opened for writing is warned
// about (QEMU's raw driver warns; a probed qcow2, or a read-only raw, gets
// no warning). minivmm does not restrict writes to block 0 as QEMU does,
// so the warning stops after QEMU's first sentence.
func probedWarning(file, format string, readonly bool) string {
	if format != "raw" || readonly {
		return ""
	}
	return fmt.Sprintf("minivmm: warning: Image format was not specified for '%s' and probing guessed raw.\n", file)
}
