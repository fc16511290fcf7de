package iotool

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// blkdebugCases are qemu-io scripts on blkdebug:CONF:IMG filenames: the
// config file injects errors at qcow2's events, and both tools must
// fail the same requests with the same words and exit status.
var blkdebugCases = []struct {
	conf string
	args []string
}{
	{"[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\nonce = \"on\"\n",
		cmds("write -P 1 0 64k", "write -P 2 0 4k", "flush", "read -P 2 0 4k", "read -P 0 64k 4k")},
	{"[inject-error]\nevent = \"flush_to_disk\"\nonce = \"on\"\n",
		[]string{"-t", "writeback", "-c", "write -P 1 0 64k", "-c", "flush", "-c", "write -P 2 0 4k", "-c", "flush", "-c", "read -P 2 0 4k"}},
	{"# the first L2 update fails the next request\n[inject-error]\nevent = \"l2_update\"\nonce = \"on\"\n",
		cmds("write -P 1 0 64k", "write -P 2 0 4k", "flush", "write 128k 4k", "read -P 2 0 4k")},
	{"[inject-error]\nevent = \"l1_update\"\nerrno = \"28\"\nonce = \"on\"\n",
		cmds("write -P 1 0 64k", "write -P 2 0 4k", "read -P 2 0 4k")},
	{"[set-state]\nstate = \"1\"\nevent = \"write_aio\"\nnew_state = \"2\"\n\n[inject-error]\nstate = \"2\"\nevent = \"write_aio\"\nonce = \"on\"\n",
		cmds("write 0 4k", "write 0 4k", "write 0 4k", "write 0 4k")},
	{"[inject-error]\nevent = \"write_aio\"\niotype = \"read\"\nonce = \"on\"\n",
		cmds("write -P 3 0 4k", "write -P 4 0 4k", "read -P 4 0 4k", "read -P 4 0 4k")},
	{"[inject-error]\nevent = \"vmstate_save\"\nerrno = \"28\"\nonce = \"on\"\n[inject-error]\nevent = \"vmstate_load\"\nonce = \"on\"\n",
		cmds("write -b -P 1 0 512", "write -b -P 2 0 512", "read -b -P 2 0 512", "read -b -P 2 0 512", "read -P 0 0 512")},
	{"", cmds("break write_aio A", "aio_write -P 7 0 4k", "wait_break A", "resume A", "aio_flush", "break bogus B", "resume A",
		"remove_break A", "break write_aio C", "remove_break C", "read -P 7 0 4k")},
	{"", cmds("break l2_update A", "aio_write 0 4k", "wait_break A", "remove_break A", "aio_flush", "remove_break A")},
	{"[inject-error]\nevent = \"nosuch\"\n", cmds("read 0 1")},
	{"[inject-error]\nerrno = \"5\"\n", cmds("read 0 1")},
	{"[bogus]\n", cmds("read 0 1")},
	{"[inject-error]\nevent = \"read_aio\"\nonce = \"x\"\n", cmds("read 0 1")},
	{"[inject-error]\nevent = \"read_aio\"\nfoo = \"1\"\n", cmds("read 0 1")},
	{"event = \"read_aio\"\n", cmds("read 0 1")},
}

func TestBlkdebugDifferential(t *testing.T) {
	t.Parallel()
	bin := qemuIO(t)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img not installed (CI=true)")
		}
		t.Skip("qemu-img not installed")
	}
	for i, c := range blkdebugCases {
		var got [2][3]string
		for j := range got {
			dir := t.TempDir()
			img, conf := filepath.Join(dir, "t.qcow2"), filepath.Join(dir, "blkdebug.conf")
			if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", img, "1M").CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create: %v: %s", err, out)
			}
			if err := os.WriteFile(conf, []byte(c.conf), 0o600); err != nil {
				t.Fatal(err)
			}
			args := append(append([]string{}, c.args...), "blkdebug:"+conf+":"+img)
			var out, errOut string
			var code int
			if j == 0 {
				out, errOut, code = runQemuIO(t, bin, "", args...)
			} else {
				out, errOut, code = ioRun(args, "")
			}
			r := strings.NewReplacer(img, "IMG", conf, "CONF")
			got[j] = [3]string{normalize(r.Replace(out)), r.Replace(errOut), strconv.Itoa(code)}
			if out, err := exec.Command(qemuImg, "check", "-q", img).CombinedOutput(); err != nil {
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 { // 3: leaks only
					t.Errorf("case %d tool %d: qemu-img check: %v: %s", i, j, err, out)
				}
			}
		}
		if got[0] != got[1] {
			t.Errorf("case %d %q %q:\nqemu-io:\n%s\n%s\nexit %q\nminivmm io:\n%s\n%s\nexit %q", i, c.conf, c.args,
				got[0][0], got[0][1], got[0][2], got[1][0], got[1][1], got[1][2])
		}
	}
}
