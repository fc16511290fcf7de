package linuxguest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// GoProgram builds the Go package pkg (an import path of this module) as
// a static linux/amd64 binary for the initramfs, and returns it. dir is
// scratch space.
func GoProgram(dir, pkg string) ([]byte, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	// No cgo: the guest has no C library.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	if !isStatic(out) {
		return nil, fmt.Errorf("go build %s: not a static binary", pkg)
	}
	return b, nil
}
