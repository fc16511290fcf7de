package harness

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommandLine(t *testing.T) {
	tmp := filepath.Join(os.TempDir(), "mvb123", "img.qcow2")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"/usr/bin/qemu-img", []string{"bench", "-c", "100", tmp}, "qemu-img bench -c 100 img.qcow2"},
		{"/tmp/x/minivmm", []string{"img", "bench", "--pattern=165"}, "minivmm img bench --pattern=165"},
		{"sh", []string{"-c", "echo 'a b'"}, `sh -c 'echo '\''a b'\'''`},
		{"x", []string{""}, "x ''"},
	} {
		if got := CommandLine(tc.name, tc.args...); got != tc.want {
			t.Errorf("CommandLine(%q, %q) = %q, want %q", tc.name, tc.args, got, tc.want)
		}
	}
}

func TestInterleave(t *testing.T) {
	var order []string
	mk := func(name string, v float64) func() (float64, error) {
		return func() (float64, error) { order = append(order, name); return v, nil }
	}
	out, err := Interleave(3, mk("a", 1), mk("b", 2))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, ""); got != "abbaab" {
		t.Errorf("order %q, want abbaab", got)
	}
	if len(out[0]) != 3 || len(out[1]) != 3 || out[0][0] != 1 || out[1][2] != 2 {
		t.Errorf("out = %v", out)
	}
	boom := errors.New("boom")
	if _, err := Interleave(2, func() (float64, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Errorf("err = %v, want boom", err)
	}
}

func TestRunRecovers(t *testing.T) {
	cleaned := 0
	err := WithT("x", func(t *T) {
		t.Cleanup(func() { cleaned++ })
		dir := t.TempDir()
		t.Cleanup(func() {
			if _, err := os.Stat(dir); err == nil {
				cleaned++ // runs before TempDir's removal (last first)
			}
		})
		t.Fatalf("failed %d", 7)
	})
	if err == nil || err.Error() != "failed 7" {
		t.Errorf("err = %v", err)
	}
	if cleaned != 2 {
		t.Errorf("%d cleanups ran, want 2", cleaned)
	}
	if err := WithT("ok", func(t *T) {}); err != nil {
		t.Errorf("err = %v", err)
	}
	if err := WithT("skip", func(t *T) { t.Skip("no qemu") }); err == nil || !strings.Contains(err.Error(), "no qemu") {
		t.Errorf("err = %v", err)
	}
}

func TestExec(t *testing.T) {
	r, err := Exec("sh", "-c", "echo hi")
	if err != nil || string(r.Out) != "hi\n" || r.Wall <= 0 {
		t.Errorf("Exec = %+v, %v", r, err)
	}
	if _, err := Exec("sh", "-c", "echo nope; exit 3"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("err = %v", err)
	}
}

func TestPeakRSS(t *testing.T) {
	tb := GNUTime()
	if tb == "" {
		t.Skip("GNU time not installed")
	}
	r, rss, err := PeakRSS(tb, t.TempDir(), "sh", "-c", "echo hi")
	if err != nil || string(r.Out) != "hi\n" || rss <= 0 || rss > 64<<20 {
		t.Errorf("PeakRSS = %+v, %d, %v", r, rss, err)
	}
}
