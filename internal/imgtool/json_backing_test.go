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

// TestJSONBackingDifferential: a backing file named with json:{...} (create
// -b, the header's name, commit through it), side by side with qemu-img
// and qemu-io 7.2: each tool makes its own chain in its own directory;
// the outputs (directory names aside) and exit codes agree, each tool
// reads the other's overlay through its json: backing, and a commit whose
// write fails at an error injected in the json: description fails as
// qemu-img's does.
func TestJSONBackingDifferential(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dirs := map[bool]string{false: t.TempDir(), true: t.TempDir()}
	run := func(real bool, tool string, args ...string) string {
		var out bytes.Buffer
		var code int
		if real {
			cmd := exec.Command(tool, args...)
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.Run()
			code = cmd.ProcessState.ExitCode()
		} else if tool == "qemu-img" {
			code = runImg(args, &out, &out)
		} else {
			o, e, c := ioRun(args, "")
			out.WriteString(o + e)
			code = c
		}
		s := strings.ReplaceAll(out.String(), dirs[real], "DIR")
		return fmt.Sprintf("%s [exit %d]", ioTimes(s), code)
	}
	var got [2][]string
	for i, real := range []bool{false, true} {
		dir := dirs[real]
		base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
		plain := fmt.Sprintf("json:{'driver': 'qcow2', 'file': {'driver': 'file', 'filename': '%s'}}", base)
		failing := fmt.Sprintf("json:{'driver': 'qcow2', 'file': {'driver': 'blkdebug', "+
			"'inject-error': [{'event': 'write_aio', 'errno': 28, 'once': true}], "+
			"'image': {'driver': 'file', 'filename': '%s'}}}", base)
		for _, step := range [][]string{
			{"qemu-img", "create", "-f", "qcow2", base, "1M"},
			{"qemu-io", "-c", "write -P 0x11 0 128k", base},
			{"qemu-img", "create", "-f", "qcow2", "-b", plain, "-F", "qcow2", top},
			{"qemu-io", "-c", "write -P 0x22 64k 64k", top},
			{"qemu-io", "-c", "read -P 0x11 0 64k", "-c", "read -P 0x22 64k 64k", top},
			{"qemu-img", "commit", top},
			{"qemu-io", "-c", "read -P 0x22 64k 64k", base},
			{"qemu-img", "create", "-f", "qcow2", "-b", failing, "-F", "qcow2", top},
			{"qemu-io", "-c", "write -P 0x33 0 64k", top},
			{"qemu-img", "commit", top},
			{"qemu-io", "-c", "read -P 0x33 0 64k", top},
			{"qemu-img", "create", "-f", "qcow2", "-b", "json:{'driver': 'qcow2', 'file': {'driver': 'file', 'filename': '" + dir + "/none'}}", "-F", "qcow2", top},
		} {
			label := strings.ReplaceAll(strings.Join(step, " "), dir, "DIR")
			got[i] = append(got[i], label+": "+run(real, step[0], step[1:]...))
		}
	}
	for j := range got[1] {
		if got[0][j] != got[1][j] {
			t.Errorf("minivmm:\n%s\nQEMU:\n%s", got[0][j], got[1][j])
		}
	}
	// Each reads the other's overlay through its json: backing.
	for _, c := range []struct{ tool, dir string }{{"qemu-io", dirs[false]}, {"", dirs[true]}} {
		top := filepath.Join(c.dir, "top.qcow2")
		os.Remove(top)
		plain := fmt.Sprintf("json:{'driver': 'qcow2', 'file': {'driver': 'file', 'filename': '%s'}}", filepath.Join(c.dir, "base.qcow2"))
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", plain, "-F", "qcow2", top).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		args := []string{"-c", "read -P 0x11 0 64k", "-c", "read -P 0x22 64k 64k", top}
		if c.tool != "" {
			if out, err := exec.Command(c.tool, args...).CombinedOutput(); err != nil || strings.Contains(string(out), "failed") {
				t.Errorf("qemu-io on minivmm's chain: %v\n%s", err, out)
			}
		} else if o, e, code := ioRun(args, ""); code != 0 || strings.Contains(o+e, "failed") {
			t.Errorf("minivmm io on qemu-img's chain: exit %d\n%s%s", code, o, e)
		}
	}
}

// ioTimes drops qemu-io's timing lines ("64 KiB, 1 ops; 00.00 sec ...").
func ioTimes(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, " ops; ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// TestJSONRelativeBackingDifferential: an image opened through a json:
// description (plain, and over blkdebug with options, whose filename no
// string rebuilds) finds a relative backing name in the directory of the
// file below it, as QEMU's bdrv_dirname: info says the same as qemu-img's
// (the json: filename aside), and reads show the backing file's data.
func TestJSONRelativeBackingDifferential(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	base, top := filepath.Join(dir, "t.qcow2.base"), filepath.Join(dir, "t.qcow2")
	for _, c := range [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", base, "64M"},
		{"qemu-io", "-c", "write -P 0x5a 0 64k", base},
		{"qemu-img", "create", "-q", "-f", "qcow2", "-b", "t.qcow2.base", "-F", "qcow2", top},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%q: %v\n%s", c, err, out)
		}
	}
	for _, name := range []string{
		"json:{'driver':'qcow2','file':{'driver':'file','filename':'" + top + "'}}",
		"json:{'driver':'qcow2','file':{'driver':'blkdebug','image':{'driver':'file','filename':'" + top + "'}," +
			"'set-state':[{'event':'read_aio','new_state':42}]}}",
	} {
		for _, args := range [][]string{{"info", name}, {"info", "--output=json", name}} {
			cmd := exec.Command("qemu-img", args...)
			want, _ := cmd.CombinedOutput()
			var out bytes.Buffer
			code := runImg(args, &out, &out)
			if g, w := infoLines(out.String()), infoLines(string(want)); code != cmd.ProcessState.ExitCode() || g != w {
				t.Errorf("%q: exit %d:\n%s\nqemu-img: exit %d:\n%s", args, code, g, cmd.ProcessState.ExitCode(), w)
			}
		}
		if o, e, code := ioRun([]string{"-c", "read -P 0x5a 0 64k", name}, ""); code != 0 || strings.Contains(o+e, "fail") {
			t.Errorf("%s: read through the relative backing: exit %d\n%s%s", name, code, o, e)
		}
	}
}

// infoLines is info's output without what names the image's json: tree
// (whose key order differs) or measures its file.
func infoLines(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "json:") || strings.Contains(l, "disk size") || strings.Contains(l, "actual-size") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}
