package iotool

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestIOTruncatePreallocDifferential: truncate -m on raw and qcow2, by
// qemu-io and minivmm io: output, exit status, contents (qemu-img
// compare), allocation (map --output=json, host offsets aside: qcow2
// places the new clusters elsewhere) and a clean qemu-img check.
func TestIOTruncatePreallocDifferential(t *testing.T) {
	t.Parallel()
	bin := qemuIO(t)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed")
	}
	type mapEntry struct {
		Start, Length int64
		Depth         int
		Present, Zero bool
		Data          bool
	}
	for _, c := range []struct {
		fmt  string
		cmds []string
	}{
		{"raw", cmds("write -P 1 0 4k", "truncate -m off 2M", "length")},
		{"raw", cmds("write -P 1 0 4k", "truncate -m falloc 2M", "read -P 0 1M 1M", "length")},
		{"raw", cmds("write -P 1 0 4k", "truncate -m full 2000k", "read -P 0 1M 976k", "length")},
		{"raw", cmds("truncate -m metadata 2M", "length", "truncate -m full 512k", "truncate -m falloc 512k", "truncate -m bogus 2M", "length")},
		{"raw", cmds("truncate -m full 1M", "truncate -m off 512k", "length")},
		{"qcow2", cmds("write -P 1 0 4k", "truncate -m off 2M", "length")},
		{"qcow2", cmds("write -P 1 0 4k", "truncate -m falloc 2M", "read -P 0 1M 1M", "length")},
		{"qcow2", cmds("write -P 1 0 4k", "truncate -m full 3M", "read -P 0 1M 2M", "length")},
		{"qcow2", cmds("truncate -m full 512k", "truncate -m falloc 512k", "truncate -m metadata 512k", "length")},
		{"qcow2", cmds("truncate -m metadata 3M", "read -P 0 0 3M", "map", "length")},
		{"qcow2", cmds("write -P 1 0 64k", "truncate -m metadata 3M", "read -P 0 1M 2M", "map", "length")},
		{"qcow2", cmds("truncate -m metadata 2000k", "truncate -m metadata 3000k", "read -P 0 0 3000k", "map", "length")},
		{"qcow2", cmds("truncate -m off 512k", "truncate -m metadata 2M", "write -P 3 1500k 4k", "read -P 0 0 1500k", "map", "length")},
	} {
		var got [2][3]string
		var maps [2][]mapEntry
		var imgs [2]string
		for j := range 2 {
			img := filepath.Join(t.TempDir(), "t.img")
			if out, err := exec.Command(qemuImg, "create", "-q", "-f", c.fmt, img, "1M").CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create: %v: %s", err, out)
			}
			args := append([]string{"-f", c.fmt}, c.cmds...)
			args = append(args, img)
			var out, errOut string
			var code int
			if j == 0 {
				out, errOut, code = runQemuIO(t, bin, "", args...)
			} else {
				out, errOut, code = ioRun(args, "")
			}
			r := strings.NewReplacer(img, "IMG", "qemu-io:", "PROG:", "minivmm io:", "PROG:")
			got[j] = [3]string{normalize(out), r.Replace(errOut), string(rune('0' + code))}
			m, err := exec.Command(qemuImg, "map", "--output=json", "-f", c.fmt, img).Output()
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(m, &maps[j]); err != nil {
				t.Fatal(err)
			}
			if c.fmt == "qcow2" {
				if out, err := exec.Command(qemuImg, "check", img).CombinedOutput(); err != nil {
					t.Errorf("%q: check: %v: %s", c.cmds, err, out)
				}
			}
			imgs[j] = img
		}
		if got[0] != got[1] {
			t.Errorf("%s %q:\nqemu-io: %q\nminivmm: %q", c.fmt, c.cmds, got[0], got[1])
		}
		if a, b := maps[0], maps[1]; len(a) != len(b) || !equalMaps(a, b) {
			t.Errorf("%s %q: map\nqemu-io: %+v\nminivmm: %+v", c.fmt, c.cmds, a, b)
		}
		if out, err := exec.Command(qemuImg, "compare", "-f", c.fmt, "-F", c.fmt, imgs[0], imgs[1]).CombinedOutput(); err != nil {
			t.Errorf("%q: images differ: %v: %s", c.cmds, err, out)
		}
	}
}

func equalMaps[E comparable](a, b []E) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
