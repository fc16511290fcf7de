package cases

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"minivmm/bench/internal/harness"
)

func TestAllIDs(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range All() {
		if !regexp.MustCompile(`^[a-z0-9-]+$`).MatchString(c.ID) || seen[c.ID] {
			t.Errorf("case id %q: not unique or not a plain -run name", c.ID)
		}
		seen[c.ID] = true
		if c.Title == "" || c.Run == nil {
			t.Errorf("case %q: no title or no Run", c.ID)
		}
	}
}

func TestReportCmd(t *testing.T) {
	for _, tc := range []struct {
		quick bool
		want  string
	}{
		{false, "go run ./bench/cmd/report -run '^layers$' -o DIR"},
		{true, "go run ./bench/cmd/report -quick -run '^layers$' -o DIR"},
	} {
		if got := reportCmd(&harness.Env{Quick: tc.quick}, "layers"); got != tc.want {
			t.Errorf("reportCmd = %q, want %q", got, tc.want)
		}
	}
}

func TestWritePattern(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	if err := writePattern(p, 3<<20+5); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 3<<20+5 {
		t.Fatalf("size %d", len(b))
	}
	// No zero bytes (a zero-detecting layer must not skip any of it), and
	// the megabytes differ.
	for i, c := range b {
		if c == 0 {
			t.Fatalf("zero byte at %d", i)
		}
	}
	if string(b[:4096]) == string(b[1<<20:1<<20+4096]) {
		t.Error("the first two megabytes start alike")
	}
}
