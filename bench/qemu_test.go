package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// binDir holds the minivmm binary built once for the subprocess
// benchmarks; TestMain removes it.
var (
	binDir    string
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// needQemuImg skips b when qemu-img is not installed, and fails it under
// CI=true, where qemu-utils is expected.
func needQemuImg(b *testing.B) {
	b.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") == "true" {
			b.Fatal("qemu-img not installed (CI=true)")
		}
		b.Skip("qemu-img not installed; apt-get install qemu-utils")
	}
}

// minivmmBinary builds ./cmd/minivmm once per test binary run.
func minivmmBinary(b *testing.B) string {
	b.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "minivmm-bench-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "minivmm")
		cmd := exec.Command("go", "build", "-o", binPath, "minivmm/cmd/minivmm")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build minivmm: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	return binPath
}

// runTool runs a command and fails b if it fails; it returns the
// combined output.
func runTool(b *testing.B, name string, args ...string) []byte {
	b.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		b.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// timeTool runs a command as runTool does and returns its wall time,
// process start and exit included.
func timeTool(b *testing.B, name string, args ...string) time.Duration {
	b.Helper()
	start := time.Now()
	runTool(b, name, args...)
	return time.Since(start)
}

var runCompleted = regexp.MustCompile(`(?m)^Run completed in ([0-9.]+) seconds\.$`)

// benchSeconds parses the "Run completed in X seconds." line that both
// qemu-img bench and minivmm img bench print.
func benchSeconds(out []byte) (float64, error) {
	m := runCompleted.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no \"Run completed\" line in %q", bytes.TrimSpace(out))
	}
	s, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil || s <= 0 {
		return 0, fmt.Errorf("bad run time %q", m[1])
	}
	return s, nil
}

// writeCompressible writes size bytes of text-like, compressible data.
func writeCompressible(b *testing.B, path string, size int) {
	b.Helper()
	var buf bytes.Buffer
	for i := 0; buf.Len() < size; i++ {
		fmt.Fprintf(&buf, "line %08d: the quick brown fox jumps over the lazy dog %d\n", i, i%97)
	}
	if err := os.WriteFile(path, buf.Bytes()[:size], 0o600); err != nil {
		b.Fatal(err)
	}
}
