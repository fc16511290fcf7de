package iotool

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
)

// TestLazyRefcountsCrashRepairDifferential is QEMU's iotest 039 and more,
// against qemu-io 7.2: a writer with lazy refcounts killed, the image it
// leaves (qemu-img check: which refcounts were on disk), and the next
// read-write session's first write repairing it, with the check's
// messages on stderr (QEMU repairs at the open itself, minivmm at the
// first write: a session that only reads is not compared). Each tool
// repairs what either tool left.
func TestLazyRefcountsCrashRepairDifferential(t *testing.T) {
	fdtest.Check(t)
	bin := qemuIO(t)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed")
	}
	cases := []struct {
		size   string
		writes []string // before the kill
		after  []string // the repairing session
	}{
		{"128M", []string{"write -P 0x5a 0 512"}, []string{"write 0 512"}},
		// Two L2 tables, a rewrite, a discard.
		{"2G", []string{"write -P 1 0 128k", "write -P 2 1G 64k", "write -P 3 0 64k", "discard 64k 64k"},
			[]string{"read -P 3 0 64k", "read -P 2 1G 64k", "write -P 4 1536M 4k"}},
		// Leaks too: a cluster freed by a rewrite over a compressed one.
		{"128M", []string{"write -c -P 5 0 64k", "write -P 6 0 64k", "write -P 7 64M 64k"},
			[]string{"read -P 6 0 64k", "write -P 8 64M 4k", "read -P 7 67112960 61440"}},
	}
	run := func(tool int, args []string) (string, string, int) {
		if tool == 0 {
			return runQemuIO(t, bin, "", args...)
		}
		return runIOChild(t, args)
	}
	for i, c := range cases {
		for killer := range 2 {
			var got [2]string
			for repairer := range 2 {
				img := filepath.Join(t.TempDir(), "t.qcow2")
				if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", "-o", "compat=1.1,lazy_refcounts=on", img, c.size).CombinedOutput(); err != nil {
					t.Fatalf("qemu-img create: %v: %s", err, out)
				}
				args := []string{"-f", "qcow2"}
				for _, w := range c.writes {
					args = append(args, "-c", w)
				}
				run(killer, append(args, "-c", "sigraise 9", img))
				check1, _ := exec.Command(qemuImg, "check", img).CombinedOutput()
				info, _ := exec.Command(qemuImg, "info", "--output=json", img).CombinedOutput()
				if !strings.Contains(string(info), `"dirty-flag": true`) {
					t.Fatalf("case %d: killer %d left the image clean", i, killer)
				}
				args = []string{"-f", "qcow2"}
				for _, w := range c.after {
					args = append(args, "-c", w)
				}
				out, errOut, code := run(repairer, append(args, img))
				check2, _ := exec.Command(qemuImg, "check", img).CombinedOutput()
				info, _ = exec.Command(qemuImg, "info", "--output=json", img).CombinedOutput()
				dirty := strings.Contains(string(info), `"dirty-flag": true`)
				r := strings.NewReplacer(img, "IMG")
				got[repairer] = "after the kill:\n" + r.Replace(string(check1)) + "repair:\n" + normalize(out) + "--\n" + r.Replace(errOut) +
					"exit " + strconv.Itoa(code) + "\nafter:\n" + r.Replace(string(check2)) + "dirty: " + strconv.FormatBool(dirty)
			}
			if got[0] != got[1] {
				t.Errorf("case %d, killed by %s:\nqemu-io repairing:\n%s\nminivmm io repairing:\n%s", i, []string{"qemu-io", "minivmm io"}[killer], got[0], got[1])
			}
		}
	}
}
