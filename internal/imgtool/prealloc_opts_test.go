package imgtool

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// resize --preallocation and create's file options (nocow,
// extent_size_hint), side by side with qemu-img: the same output, exit
// status, and (for preallocation) at least the blocks qemu-img allocates.
func TestPreallocAndFileOptions(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	for _, tc := range []struct {
		setup []string // qemu-img create args, image last
		args  []string // the command under test, image last
	}{
		{[]string{"-f", "raw", "IMG", "128k"}, []string{"resize", "-f", "raw", "--preallocation=falloc", "IMG", "+256k"}},
		{[]string{"-f", "raw", "IMG", "128k"}, []string{"resize", "-f", "raw", "--preallocation=full", "IMG", "+256k"}},
		{[]string{"-f", "raw", "IMG", "128k"}, []string{"resize", "-f", "raw", "--preallocation=off", "IMG", "+256k"}},
		{[]string{"-f", "raw", "IMG", "128k"}, []string{"resize", "-f", "raw", "--preallocation=metadata", "IMG", "+256k"}},
		{[]string{"-f", "raw", "IMG", "128k"}, []string{"resize", "--preallocation=bogus", "IMG", "+256k"}},
		{[]string{"-f", "raw", "IMG", "128k"}, []string{"resize", "-f", "raw", "--shrink", "--preallocation=full", "IMG", "-64k"}},
		{nil, []string{"create", "-f", "raw", "-o", "preallocation=full,extent_size_hint=0", "IMG", "128k"}},
		{nil, []string{"create", "-f", "raw", "-o", "nocow=on,extent_size_hint=1M", "IMG", "128k"}},
		{nil, []string{"create", "-f", "qcow2", "-o", "nocow=off,extent_size_hint=0", "IMG", "128k"}},
		{nil, []string{"create", "-f", "raw", "-o", "extent_size_hint=5G", "IMG", "128k"}},
		{nil, []string{"create", "-f", "raw", "-o", "nocow=bad", "IMG", "128k"}},
	} {
		var got [2]string
		var blocks [2]int64
		for i, real := range []bool{false, true} {
			img := filepath.Join(t.TempDir(), "t.img")
			subst := func(a []string) []string {
				out := make([]string, len(a))
				for j, s := range a {
					out[j] = strings.ReplaceAll(s, "IMG", img)
				}
				return out
			}
			if tc.setup != nil {
				if out, err := exec.Command("qemu-img", append([]string{"create", "-q"}, subst(tc.setup)...)...).CombinedOutput(); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
			}
			var out, errs bytes.Buffer
			var code int
			if real {
				cmd := exec.Command("qemu-img", subst(tc.args)...)
				cmd.Stdout, cmd.Stderr = &out, &errs
				cmd.Run()
				code = cmd.ProcessState.ExitCode()
			} else {
				code = runImg(subst(tc.args), &out, &errs)
			}
			got[i] = strings.ReplaceAll(string(rune('0'+code))+" "+out.String()+errs.String(), img, "IMG")
			if st, err := os.Stat(img); err == nil {
				blocks[i] = statBlocks(st)
			}
		}
		if got[0] != got[1] {
			t.Errorf("%v: minivmm %q, qemu-img %q", tc.args, got[0], got[1])
		}
		if tc.args[0] == "resize" && blocks[0] < blocks[1] {
			t.Errorf("%v: minivmm's image has %d blocks, qemu-img's %d", tc.args, blocks[0], blocks[1])
		}
	}
}

func statBlocks(st os.FileInfo) int64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Blocks
	}
	return 0
}
