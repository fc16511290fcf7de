package imgtool

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestImgInfoSnapshots lists internal snapshots as qemu-img info does,
// including a VM state, VM clock and an entry without an icount (patched
// in, as qemu-img snapshot -c records none of them).
func TestImgInfoSnapshots(t *testing.T) {
	t.Parallel()
	imgReadNeedQemu(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	imgReadRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p("s.qcow2"), "1M")
	imgReadRun(t, "qemu-io", "-c", "write -P 1 0 64k", p("s.qcow2"))
	for _, name := range []string{"first", "a much longer snapshot name", "é-ünï"} {
		imgReadRun(t, "qemu-img", "snapshot", "-c", name, p("s.qcow2"))
	}
	imgReadRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", p("s.qcow2"), "-F", "qcow2", p("t.qcow2"))
	imgReadRun(t, "qemu-img", "snapshot", "-c", "top", p("t.qcow2"))
	table := int64(peek64(t, p("s.qcow2"), 64))
	patch(t, p("s.qcow2"), table+24, be64(3723456789012))      // VM clock 1:02:03.456
	patch(t, p("s.qcow2"), table+40, be64(5<<30+12345))        // VM state size
	patch(t, p("s.qcow2"), table+56, be64(0xffffffffffffffff)) // no icount
	for _, args := range [][]string{
		{p("s.qcow2")}, {"--output=json", p("s.qcow2")},
		{"--backing-chain", p("t.qcow2")}, {"--backing-chain", "--output=json", p("t.qcow2")},
	} {
		args = append([]string{"info"}, args...)
		var out, errb bytes.Buffer
		code := runImg(args, &out, &errb)
		want, err := exec.Command("qemu-img", args...).Output()
		if err != nil {
			t.Fatal(err)
		}
		if code != 0 || out.String() != string(want) || errb.Len() != 0 {
			t.Errorf("%q: exit %d\n%s%s\nwant\n%s", args, code, out.String(), errb.String(), want)
		}
		if strings.Contains(args[len(args)-1], "s.qcow2") && !strings.Contains(out.String(), "01:02:03.456") &&
			!strings.Contains(out.String(), `"vm-clock-sec": 3723`) {
			t.Errorf("%q: the patched VM clock is not shown", args)
		}
	}
}
