package imgtool

import (
	"bytes"
	"testing"
)

// TestImgGetoptInterop runs each subcommand's shared options (help, bad
// options) through qemu-img and in-process: stderr and exit status must
// match. -h prints minivmm's help, not qemu-img's (whose list of commands
// is not minivmm's), so there the help must be the one `img --help` prints.
func TestImgGetoptInterop(t *testing.T) {
	t.Parallel()
	imgReadNeedQemu(t)
	var help bytes.Buffer
	if code := runImg([]string{"--help"}, &help, &bytes.Buffer{}); code != 0 || help.Len() == 0 {
		t.Fatalf("img --help: exit %d, %q", code, help.String())
	}
	for _, cmd := range []string{"bench", "check", "commit", "compare", "convert", "create", "info", "map", "rebase", "resize"} {
		for _, args := range [][]string{
			{"-h"}, {"--help"}, {"--he", "x"}, {"-h", "x", "1G"}, {"x", "-h", "y", "1G"},
			{"-Z", "x", "1G"}, {"--bogus", "x", "1G"}, {"--help=x", "x", "1G"},
			{"-f"}, {"x", "-f"}, {"--format"}, {"", "1G"},
		} {
			args := append([]string{cmd}, args...)
			got, want := ourImgRun(args...), qemuImgRun(t, t.TempDir(), args...)
			if want.code == 0 && want.out != "" {
				want.out = help.String()
			}
			if got != want {
				t.Errorf("%q: exit %d (want %d)\nstdout %.80q (want %.80q)\nstderr %q\nwant   %q",
					args, got.code, want.code, got.out, want.out, got.err, want.err)
			}
		}
	}
}

// TestImgGetoptMidCluster: a bad option inside a cluster is named as
// itself, where qemu-img names the argument before it.
func TestImgGetoptMidCluster(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"info", "-Uqf", "raw", "x"}, "qemu-img: unrecognized option '-q'\n"},
		{[]string{"map", "-Zf", "raw", "x"}, "qemu-img: unrecognized option '-Z'\n"},
		{[]string{"check", "-qZ", "x"}, "qemu-img: unrecognized option '-qZ'\n"},
		{[]string{"convert", "x", "y", "-add-fd"}, "qemu-img: missing argument for option '-add-fd'\n"},
	} {
		var out, errb bytes.Buffer
		if code := runImg(tc.args, &out, &errb); code != 1 || errb.String() != tc.want+tryHelp || out.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", tc.args, code, out.String(), errb.String())
		}
	}
}
