package fdtest

import (
	"fmt"
	"os"
	"testing"
)

// Main runs a package's tests (from its TestMain) and fails the run if
// they leave open a descriptor that was not open before, or close one
// that was. It is the check for tests that run in parallel: their own
// Check would count each other's descriptors, but once every test has
// ended, whatever is still open was leaked by one of them.
func Main(m *testing.M) int {
	warmUp()
	before := Open()
	code := m.Run()
	if diff := describe(before, Open()); diff != "" {
		fmt.Fprintf(os.Stderr, "fd leak check of the package's tests: %s\n", diff)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Diff describes how after differs from before (lists from Open): the
// descriptors opened and not closed, and those closed that were open; ""
// when none. A child process run by a test checks itself with it.
func Diff(before, after []int) string { return describe(before, after) }
