package main

import "testing"

// TestProbedWarning: what QEMU 7.2's -drive prints for a probed image
// (qemu-system-x86_64 -drive file=X,if=none[,readonly=on]): a warning for
// raw opened writable only. A probed qcow2 used to be warned about as
// "guessed raw".
func TestProbedWarning(t *testing.T) {
	for _, tc := range []struct {
		format   string
		readonly bool
		want     string
	}{
		{"raw", false, "minivmm: warning: Image format was not specified for 'IMG' and probing guessed raw.\n"},
		{"raw", true, ""},
		{"qcow2", true, ""},
		{"qcow2", false, ""},
	} {
		if got := probedWarning("IMG", tc.format, tc.readonly); got != tc.want {
			t.Errorf("%s read-only=%v: %q, want %q", tc.format, tc.readonly, got, tc.want)
		}
	}
}
