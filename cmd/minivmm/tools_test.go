package main

import (
	"os"
	"os/exec"
	"testing"
)

// needTools skips a test without the real tools it compares with, except
// under CI=true, where a missing tool fails the run.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (CI=true)", tool)
			}
			t.Skipf("%s not installed; apt-get install qemu-utils qemu-system-x86", tool)
		}
	}
}
