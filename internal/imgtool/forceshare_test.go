package imgtool

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestForceShareInterop: -U where qemu-img takes it (and refuses it where
// it does not, or with a writable open), compared by exit status and
// stderr, each tool on its own copy of the images.
func TestForceShareInterop(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	for _, args := range [][]string{
		{"info", "-U", "Q"},
		{"map", "-U", "--output=json", "Q"},
		{"check", "-U", "Q"},
		{"check", "-U", "-r", "all", "Q"},
		{"compare", "-U", "Q", "R"},
		{"convert", "-U", "-O", "raw", "Q", "OUT"},
		{"bench", "-U", "-c", "1", "Q"},
		{"bench", "-U", "-w", "-c", "1", "Q"},
		{"rebase", "-U", "-u", "-b", "", "Q"},
		{"rebase", "-U", "-b", "R", "-F", "raw", "Q"},
		{"commit", "-U", "Q"},
		{"resize", "-U", "Q", "2M"},
		{"create", "-U", "-f", "raw", "OUT", "1M"},
	} {
		var got [2][2]string
		for i, ours := range []bool{false, true} {
			dir := t.TempDir()
			q, r, out := filepath.Join(dir, "q.qcow2"), filepath.Join(dir, "r.raw"), filepath.Join(dir, "out")
			if b, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", q, "1M").CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, b)
			}
			if err := os.WriteFile(r, make([]byte, 1<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			a := make([]string, len(args))
			for j, s := range args {
				a[j] = strings.NewReplacer("Q", q, "R", r, "OUT", out).Replace(s)
			}
			var stderr string
			code := 0
			if ours {
				var o, e bytes.Buffer
				code = runImg(a, &o, &e)
				stderr = e.String()
			} else {
				cmd := exec.Command("qemu-img", a...)
				var e bytes.Buffer
				cmd.Stderr = &e
				if c, ok := err(cmd.Run()); ok {
					code = c
				}
				stderr = e.String()
			}
			got[i] = [2]string{strings.ReplaceAll(stderr, dir+"/", ""), string(rune('0' + code))}
		}
		if got[0] != got[1] {
			t.Errorf("%q:\nqemu-img: exit %s, stderr %q\nminivmm:  exit %s, stderr %q", args, got[0][1], got[0][0], got[1][1], got[1][0])
		}
	}
}
