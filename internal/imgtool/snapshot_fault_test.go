package imgtool

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestImgSnapshotDeleteFaultDifferential: errors injected while a
// snapshot is deleted (QEMU's iotest 217) fail it as qemu-img does, with
// its messages ("qcow2_free_clusters failed", then the step that failed),
// and leave the same leaks for qemu-img check to find.
func TestImgSnapshotDeleteFaultDifferential(t *testing.T) {
	t.Parallel()
	imgReadNeedQemu(t)
	for _, rule := range []string{
		"event = \"cluster_free\"\nerrno = \"5\"\n",
		"event = \"cluster_free\"\nerrno = \"5\"\nonce = \"on\"\n",
		"event = \"cluster_free\"\nerrno = \"28\"\niotype = \"write\"\n",
		"event = \"refblock_update_part\"\nerrno = \"5\"\nonce = \"on\"\n",
	} {
		t.Run(strings.ReplaceAll(rule, "\n", " "), func(t *testing.T) {
			t.Parallel()
			var got [2][4]string
			for j := range got {
				dir := t.TempDir()
				img, conf := filepath.Join(dir, "t.qcow2"), filepath.Join(dir, "blkdebug.conf")
				imgReadRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
				imgReadRun(t, "qemu-io", "-c", "write 0 64k", img)
				imgReadRun(t, "qemu-img", "snapshot", "-c", "foo", img)
				if err := os.WriteFile(conf, []byte("[inject-error]\n"+rule), 0o600); err != nil {
					t.Fatal(err)
				}
				args := []string{"snapshot", "-d", "foo", "blkdebug:" + conf + ":" + img}
				var out, errOut bytes.Buffer
				code := 0
				if j == 0 {
					cmd := exec.Command("qemu-img", args...)
					cmd.Stdout, cmd.Stderr = &out, &errOut
					if err := cmd.Run(); err != nil {
						ee, ok := err.(*exec.ExitError)
						if !ok {
							t.Fatal(err)
						}
						code = ee.ExitCode()
					}
				} else {
					code = runImg(args, &out, &errOut)
				}
				check, _ := exec.Command("qemu-img", "check", img).CombinedOutput()
				list, _ := exec.Command("qemu-img", "snapshot", "-l", img).CombinedOutput()
				r := strings.NewReplacer(img, "IMG", conf, "CONF")
				got[j] = [4]string{r.Replace(out.String()), r.Replace(errOut.String()), fmt.Sprint(code), string(check) + string(list)}
			}
			if got[0] != got[1] {
				t.Errorf("qemu-img:\n%s%s\nexit %s\n%s\nminivmm img:\n%s%s\nexit %s\n%s",
					got[0][0], got[0][1], got[0][2], got[0][3], got[1][0], got[1][1], got[1][2], got[1][3])
			}
		})
	}
}
