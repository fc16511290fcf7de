package imgtool

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func crNeedQemu(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("qemu-img not installed; apt-get install qemu-utils")
			}
			t.Skip("qemu-img not installed; apt-get install qemu-utils")
		}
	}
}

// crRun runs a tool in dir and returns its output, failing the test on error.
func crRun(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// crImg runs minivmm img in dir (in a child process).
func crImg(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	out, errs, code := imgIn(t, dir, args...)
	return code, out, errs
}

func crIdentical(t *testing.T, dir string, args ...string) {
	t.Helper()
	out := crRun(t, dir, "qemu-img", append([]string{"compare"}, args...)...)
	if !strings.Contains(out, "Images are identical.") {
		t.Fatalf("compare %v: %s", args, out)
	}
}

func crCheck(t *testing.T, dir string, files ...string) {
	t.Helper()
	for _, f := range files {
		out := crRun(t, dir, "qemu-img", "check", f)
		if !strings.Contains(out, "No errors were found") || strings.Contains(out, "leaked") {
			t.Fatalf("check %s: %s", f, out)
		}
	}
}

func crRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// crChain builds base (raw or qcow2) <- mid <- top, or base <- top.
func crChain(t *testing.T, dir, baseFmt string, deep bool) []string {
	t.Helper()
	base := "base." + baseFmt
	crRun(t, dir, "qemu-img", "create", "-f", baseFmt, base, "4M")
	crRun(t, dir, "qemu-io", "-f", baseFmt, "-c", "write -P 1 0 1M", "-c", "write -P 4 3M 8k", base)
	files := []string{base}
	if deep {
		crRun(t, dir, "qemu-img", "create", "-f", "qcow2", "-b", base, "-F", baseFmt, "mid.qcow2")
		crRun(t, dir, "qemu-io", "-c", "write -P 2 512k 1M", "-c", "write -z 3M 64k", "mid.qcow2")
		files = append(files, "mid.qcow2")
	}
	under := files[len(files)-1]
	crRun(t, dir, "qemu-img", "create", "-f", "qcow2", "-b", under, "-F", map[bool]string{true: "qcow2", false: baseFmt}[deep], "top.qcow2")
	crRun(t, dir, "qemu-io", "-c", "write -P 3 1M 100k", "-c", "write -z 0 64k", "-c", "write -P 6 3900k 3k", "top.qcow2")
	return append(files, "top.qcow2")
}

func crCopyDir(t *testing.T, src, dst string, files []string) {
	t.Helper()
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dst, f), crRead(t, filepath.Join(src, f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestImgCommitChains(t *testing.T) {
	crNeedQemu(t)
	t.Parallel()
	for _, tc := range []struct {
		name    string
		baseFmt string
		deep    bool
		args    []string
		drop    bool
	}{
		{"raw-2deep", "raw", false, nil, false},
		{"qcow2-2deep", "qcow2", false, nil, false},
		{"qcow2-2deep-d", "qcow2", false, []string{"-d"}, true},
		{"qcow2-3deep", "qcow2", true, nil, false},
		{"raw-3deep-b", "raw", true, []string{"-b", "base.raw"}, true},
		{"qcow2-3deep-b", "qcow2", true, []string{"-b", "base.qcow2"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, ref := t.TempDir(), t.TempDir()
			files := crChain(t, dir, tc.baseFmt, tc.deep)
			crCopyDir(t, dir, ref, files)
			crRun(t, dir, "qemu-img", "convert", "-O", "raw", "top.qcow2", "before.raw")
			topBefore := crRead(t, filepath.Join(dir, "top.qcow2"))
			base := files[0]
			if tc.args == nil {
				base = files[len(files)-2]
			}
			args := append(append([]string{"commit"}, tc.args...), "top.qcow2")
			code, out, errs := crImg(t, dir, args...)
			if code != 0 || out != "Image committed.\n" || errs != "" {
				t.Fatalf("commit: %d %q %q", code, out, errs)
			}
			crRun(t, ref, "qemu-img", args...)
			fmtArgs := []string{"-F", "qcow2"}
			if strings.HasSuffix(base, ".raw") {
				fmtArgs = []string{"-F", "raw"}
			}
			// The base now reads as the old top did, as qemu-img's does.
			crIdentical(t, dir, append(fmtArgs, "before.raw", base)...)
			crIdentical(t, ref, append(fmtArgs, filepath.Join(dir, "before.raw"), base)...)
			crIdentical(t, dir, append(fmtArgs, base, filepath.Join(ref, base))...)
			// The top still reads the same through the chain.
			crIdentical(t, dir, "before.raw", "top.qcow2")
			var q2 []string
			for _, f := range files {
				if strings.HasSuffix(f, ".qcow2") {
					q2 = append(q2, f)
				}
			}
			crCheck(t, dir, q2...)
			if tc.drop {
				if !bytes.Equal(crRead(t, filepath.Join(dir, "top.qcow2")), topBefore) {
					t.Fatal("top changed with -d/-b")
				}
			} else {
				// Emptied: nothing allocated in the top, as after qemu-img commit.
				for _, d := range []string{dir, ref} {
					m := crRun(t, d, "qemu-img", "map", "--output=json", "top.qcow2")
					if strings.Contains(m, `"depth": 0`) {
						t.Fatalf("top not emptied in %s: %s", d, m)
					}
				}
			}
		})
	}
}

func TestImgCommitErrors(t *testing.T) {
	crNeedQemu(t)
	t.Parallel()
	dir := t.TempDir()
	crRun(t, dir, "qemu-img", "create", "-f", "qcow2", "s.qcow2", "1M")
	crChain(t, dir, "qcow2", false)
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"commit", "s.qcow2"}, "qemu-img: Image does not have a backing file\n"},
		{[]string{"commit", "-b", "nonex", "top.qcow2"}, "qemu-img: Did not find 'nonex' in the backing chain of 'top.qcow2'\n"},
	} {
		code, _, errs := crImg(t, dir, tc.args...)
		ref := exec.Command("qemu-img", tc.args...)
		ref.Dir = dir
		qout, _ := ref.CombinedOutput()
		if code != 1 || errs != tc.err || string(qout) != tc.err {
			t.Fatalf("%v: %d %q (qemu-img: %q)", tc.args, code, errs, qout)
		}
	}
}

// crRebaseSetup: A (qcow2) <- t.qcow2, and B (raw) differing from A.
func crRebaseSetup(t *testing.T, dir string) {
	crRun(t, dir, "qemu-img", "create", "-f", "qcow2", "A.qcow2", "4M")
	crRun(t, dir, "qemu-io", "-c", "write -P 1 0 2M", "A.qcow2")
	crRun(t, dir, "qemu-img", "create", "-f", "raw", "B.raw", "4M")
	crRun(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 1 0 1M", "-c", "write -P 5 1M 512", "-c", "write -P 7 3M 4k", "B.raw")
	crRun(t, dir, "qemu-img", "create", "-f", "qcow2", "-b", "A.qcow2", "-F", "qcow2", "t.qcow2")
	crRun(t, dir, "qemu-io", "-c", "write -P 9 1536k 100k", "t.qcow2")
}

func TestImgRebaseSafe(t *testing.T) {
	crNeedQemu(t)
	t.Parallel()
	for _, tc := range []struct {
		name, backing, fmt string
	}{
		{"to-B", "B.raw", "raw"},
		{"remove", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, ref := t.TempDir(), t.TempDir()
			crRebaseSetup(t, dir)
			crCopyDir(t, dir, ref, []string{"A.qcow2", "B.raw", "t.qcow2"})
			crRun(t, dir, "qemu-img", "convert", "-O", "raw", "t.qcow2", "before.raw")
			args := []string{"rebase", "-b", tc.backing}
			if tc.fmt != "" {
				args = append(args, "-F", tc.fmt)
			}
			args = append(args, "t.qcow2")
			code, out, errs := crImg(t, dir, args...)
			if code != 0 || out != "" || errs != "" {
				t.Fatalf("rebase: %d %q %q", code, out, errs)
			}
			crRun(t, ref, "qemu-img", args...)
			crRun(t, dir, "qemu-img", "convert", "-O", "raw", "t.qcow2", "after.raw")
			crIdentical(t, dir, "-f", "raw", "-F", "raw", "before.raw", "after.raw")
			crIdentical(t, dir, "t.qcow2", filepath.Join(ref, "t.qcow2"))
			crCheck(t, dir, "t.qcow2", "A.qcow2")
			info := crRun(t, dir, "qemu-img", "info", "t.qcow2")
			refInfo := crRun(t, ref, "qemu-img", "info", "t.qcow2")
			for _, s := range []string{"backing file: ", "backing file format: "} {
				if backingLine(info, s) != backingLine(refInfo, s) {
					t.Fatalf("info differs from qemu-img's:\n%s\nvs\n%s", info, refInfo)
				}
			}
			if tc.backing != "" && !strings.Contains(info, "backing file: B.raw\n") {
				t.Fatalf("info: %s", info)
			}
			if tc.backing == "" && strings.Contains(info, "backing file") {
				t.Fatalf("info: %s", info)
			}
		})
	}
}

func backingLine(info, prefix string) string {
	for _, l := range strings.Split(info, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func TestImgRebaseUnsafe(t *testing.T) {
	crNeedQemu(t)
	t.Parallel()
	dir, ref := t.TempDir(), t.TempDir()
	crRebaseSetup(t, dir)
	crCopyDir(t, dir, ref, []string{"A.qcow2", "B.raw", "t.qcow2"})
	before := crRead(t, filepath.Join(dir, "t.qcow2"))
	args := []string{"rebase", "-u", "-b", "B.raw", "-F", "raw", "t.qcow2"}
	if code, out, errs := crImg(t, dir, args...); code != 0 || out != "" || errs != "" {
		t.Fatalf("rebase -u: %d %q %q", code, out, errs)
	}
	crRun(t, ref, "qemu-img", args...)
	after := crRead(t, filepath.Join(dir, "t.qcow2"))
	// Only the header (cluster 0) changed: everything else is as it was.
	if len(after) != len(before) || !bytes.Equal(after[65536:], before[65536:]) {
		t.Fatal("rebase -u changed more than cluster 0")
	}
	// The header is byte for byte what qemu-img writes.
	refAfter := crRead(t, filepath.Join(ref, "t.qcow2"))
	if !bytes.Equal(after[:65536], refAfter[:65536]) {
		t.Fatal("header differs from qemu-img rebase -u's")
	}
	crCheck(t, dir, "t.qcow2")
	info := crRun(t, dir, "qemu-img", "info", "t.qcow2")
	if !strings.Contains(info, "backing file: B.raw\n") || !strings.Contains(info, "backing file format: raw\n") {
		t.Fatalf("info: %s", info)
	}
	// Back again, and without a backing file: still clean.
	if code, _, errs := crImg(t, dir, "rebase", "-u", "-b", "A.qcow2", "-F", "qcow2", "t.qcow2"); code != 0 {
		t.Fatal(errs)
	}
	crRun(t, dir, "qemu-img", "convert", "-O", "raw", "t.qcow2", "back.raw")
	crRun(t, ref, "qemu-img", "rebase", "-u", "-b", "A.qcow2", "-F", "qcow2", "t.qcow2")
	crIdentical(t, dir, "t.qcow2", filepath.Join(ref, "t.qcow2"))
	if code, _, errs := crImg(t, dir, "rebase", "-u", "-b", "", "t.qcow2"); code != 0 {
		t.Fatal(errs)
	}
	crCheck(t, dir, "t.qcow2")
	if info := crRun(t, dir, "qemu-img", "info", "t.qcow2"); strings.Contains(info, "backing file") {
		t.Fatalf("info: %s", info)
	}
	// No -F: refused, as qemu-img 7.2 does, before anything is written.
	code, _, errs := crImg(t, dir, "rebase", "-u", "-b", "B.raw", "t.qcow2")
	if code != 1 || errs != "qemu-img: Could not change the backing file to 'B.raw': backing format must be specified\n" {
		t.Fatalf("%d %q", code, errs)
	}
}

// commit -b with a relative name is relative to the overlay's directory,
// as in qemu-img: from the working directory, "t.mid" names sub/t.mid of
// sub/t.qcow2's chain, and "sub/t.mid" names nothing.
func TestImgCommitRelativeBase(t *testing.T) {
	crNeedQemu(t)
	t.Parallel()
	for _, tc := range []struct {
		base string
		want string // stderr, of both
	}{
		{"t.mid", ""},
		{"sub/t.mid", "qemu-img: Did not find 'sub/t.mid' in the backing chain of 'sub/t.qcow2'\n"},
	} {
		var got [2]string
		for i, real := range []bool{false, true} {
			dir := t.TempDir()
			os.Mkdir(filepath.Join(dir, "sub"), 0o755)
			crRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "sub/t.base", "1M")
			crRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "t.base", "-F", "qcow2", "sub/t.mid")
			crRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "t.mid", "-F", "qcow2", "sub/t.qcow2")
			args := []string{"commit", "-q", "-b", tc.base, "sub/t.qcow2"}
			if real {
				ref := exec.Command("qemu-img", args...)
				ref.Dir = dir
				out, _ := ref.CombinedOutput()
				got[i] = string(out)
			} else {
				_, _, got[i] = crImg(t, dir, args...)
			}
		}
		if got[0] != tc.want || got[1] != tc.want {
			t.Errorf("-b %s: minivmm %q, qemu-img %q; want %q", tc.base, got[0], got[1], tc.want)
		}
	}
}
