package quorum_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
	"minivmm/internal/iotool"
	"minivmm/internal/qtool"
)

// needQemuIO skips without qemu-io 7.2, except under CI=true.
func needQemuIO(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-io", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (CI=true)", tool)
			}
			t.Skipf("%s not installed; apt-get install qemu-utils", tool)
		}
	}
}

// timing is the line qemu-io prints after a request, which differs
// from run to run.
var timing = regexp.MustCompile(`(?m)^[0-9.]+ (?:[KMGTPE]iB|bytes), \d+ ops; .*$`)

func filter(s, dir string) string {
	return strings.ReplaceAll(timing.ReplaceAllString(s, "TIMING"), dir, "DIR")
}

// children makes three 1 MiB children in dir, filled with 0x11 (raw) or
// written so (qcow2), and pokes into them what setup says: qemu-io
// commands per child.
func children(t *testing.T, dir, format string, setup map[int]string) []string {
	t.Helper()
	var paths []string
	for i := range 3 {
		p := filepath.Join(dir, fmt.Sprintf("c%d.%s", i, format))
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", format, p, "1M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v\n%s", err, out)
		}
		args := []string{"-f", format, "-c", "write -q -P 0x11 0 1M"}
		if c := setup[i]; c != "" {
			args = append(args, "-c", c)
		}
		if out, err := exec.Command("qemu-io", append(args, p)...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-io: %v\n%s", err, out)
		}
		paths = append(paths, p)
	}
	return paths
}

// quorumOpts is the --image-opts string of a raw node over a quorum of
// paths (each a "format" image).
func quorumOpts(paths []string, format, extra string) string {
	o := "driver=raw,file.driver=quorum,file.vote-threshold=2"
	for i, p := range paths {
		o += fmt.Sprintf(",file.children.%d.driver=%s,file.children.%d.file.filename=%s", i, format, i, p)
	}
	if extra != "" {
		o += "," + extra
	}
	return o
}

// TestQuorumInterop runs the same qemu-io commands on the same quorums
// with qemu-io 7.2 and with minivmm's io, and wants the same output,
// exit status and children afterwards.
func TestQuorumInterop(t *testing.T) {
	needQemuIO(t)
	for _, tc := range []struct {
		name   string
		format string
		setup  map[int]string // qemu-io commands on children, before
		extra  string         // quorum options
		cmds   []string
		// opts, if set, names the image instead of quorumOpts: a
		// filename (json:) unless it starts with "--image-opts ".
		opts func(paths []string) string
	}{
		{name: "write and read", format: "raw",
			cmds: []string{"write -P 0x22 4k 8k", "read -P 0x22 4k 8k", "read -P 0x11 12k 4k", "write -z 64k 64k", "read -P 0 64k 64k", "flush"}},
		{name: "one corrupt child is outvoted", format: "raw", setup: map[int]string{1: "write -P 0xee 64k 4k"},
			cmds: []string{"read -P 0x11 64k 4k", "read -P 0x11 60k 12k", "read -v 65535 2"}},
		{name: "two corrupt children differ: no quorum", format: "raw", setup: map[int]string{0: "write -P 0xaa 64k 512", 1: "write -P 0xbb 64k 512"},
			cmds: []string{"read -P 0x11 0 64k", "read 64k 4k", "read -P 0x11 68k 4k"}},
		{name: "two corrupt children agree", format: "raw", setup: map[int]string{0: "write -P 0xaa 64k 512", 2: "write -P 0xaa 64k 512"},
			cmds: []string{"read -P 0xaa 64k 512"}},
		{name: "rewrite-corrupted", format: "raw", extra: "file.rewrite-corrupted=on", setup: map[int]string{2: "write -P 0xee 128k 4k"},
			cmds: []string{"read -P 0x11 128k 4k"}},
		{name: "fifo reads the first child", format: "raw", extra: "file.read-pattern=fifo", setup: map[int]string{0: "write -P 0xee 0 4k"},
			cmds: []string{"read -P 0x11 0 4k", "read -P 0xee 0 4k"}},
		{name: "qcow2 children", format: "qcow2", setup: map[int]string{1: "write -z 256k 64k"},
			cmds: []string{"read -P 0x11 256k 64k", "write -P 3 512k 64k", "read -P 3 512k 64k", "write -z 512k 4k", "read -P 0 512k 4k", "aio_write -P 4 0 4k", "aio_flush", "read -P 4 0 4k"}},
		{name: "threshold above the children", format: "raw", extra: "file.vote-threshold=4", cmds: []string{"read 0 512"}},
		{name: "threshold 0", format: "raw", extra: "file.vote-threshold=0", cmds: []string{"read 0 512"}},
		{name: "unknown read pattern", format: "raw", extra: "file.read-pattern=random", cmds: []string{"read 0 512"}},
		{name: "blkverify with three children", format: "raw", extra: "file.blkverify=on", cmds: []string{"read 0 512"}},
		{name: "children of different lengths", format: "raw", setup: map[int]string{2: "truncate 2M"}, cmds: []string{"read 0 512"}},
		{name: "json: filename with a list of children", format: "raw", setup: map[int]string{0: "write -P 0xee 0 512"},
			opts: func(p []string) string {
				return fmt.Sprintf(`json:{"driver": "raw", "file": {"driver": "quorum", "vote-threshold": 2, "children": [`+
					`{"driver": "file", "filename": "%s"}, {"driver": "file", "filename": "%s"}, {"driver": "file", "filename": "%s"}]}}`, p[0], p[1], p[2])
			},
			cmds: []string{"read -P 0x11 0 512", "write -P 5 1k 1k", "read -P 5 1k 1k"}},
		{name: "writes failing on one child and then on two", format: "raw",
			opts: func(p []string) string {
				return fmt.Sprintf("--image-opts driver=raw,file.driver=quorum,file.vote-threshold=2,"+
					"file.children.0.driver=blkdebug,file.children.0.image.filename=%s,"+
					"file.children.0.inject-error.0.event=pwritev,file.children.0.inject-error.0.errno=28,"+
					"file.children.1.driver=blkdebug,file.children.1.image.filename=%s,"+
					"file.children.1.inject-error.0.event=pwritev,file.children.1.inject-error.0.errno=5,file.children.1.inject-error.0.sector=16,"+
					"file.children.2.driver=file,file.children.2.filename=%s", p[0], p[1], p[2])
			},
			cmds: []string{"write -P 6 0 4k", "write -P 7 8k 4k", "read -P 6 0 4k", "flush"}},
		{name: "blkverify and children that agree", format: "raw", extra: "file.blkverify=on,file.children.2.driver=raw", cmds: []string{"read 0 512"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fdtest.Check(t)
			var outs [2]string
			var codes [2]int
			var images [2][][]byte
			for k, tool := range []string{"qemu", "minivmm"} {
				dir := t.TempDir()
				paths := children(t, dir, tc.format, tc.setup)
				extra := tc.extra
				if strings.Contains(extra, "file.children.2.driver=raw") {
					// blkverify takes exactly two children.
					extra = "file.blkverify=on,file.vote-threshold=2"
					paths = paths[:2]
				}
				name, imageOpts := quorumOpts(paths, tc.format, extra), true
				if tc.opts != nil {
					name = tc.opts(paths)
					name, imageOpts = strings.CutPrefix(name, "--image-opts ")
				}
				var args []string
				if imageOpts {
					args = append(args, "--image-opts")
				}
				for _, c := range tc.cmds {
					args = append(args, "-c", c)
				}
				args = append(args, name)
				var out bytes.Buffer
				if tool == "qemu" {
					cmd := exec.Command("qemu-io", args...)
					cmd.Stdout, cmd.Stderr = &out, &out
					err := cmd.Run()
					if ee, ok := err.(*exec.ExitError); ok {
						codes[k] = ee.ExitCode()
					} else if err != nil {
						t.Fatal(err)
					}
				} else {
					codes[k] = iotool.Run(qtool.Program{Name: "qemu-io", Version: "test"}, args, strings.NewReader(""), &out, &out)
				}
				outs[k] = filter(out.String(), dir)
				for _, p := range paths {
					raw := p + ".raw"
					if out, err := exec.Command("qemu-img", "convert", "-O", "raw", p, raw).CombinedOutput(); err != nil {
						t.Fatalf("qemu-img convert: %v\n%s", err, out)
					}
					data, err := os.ReadFile(raw)
					if err != nil {
						t.Fatal(err)
					}
					images[k] = append(images[k], data)
				}
			}
			if outs[0] != outs[1] || codes[0] != codes[1] {
				t.Errorf("qemu-io (exit %d):\n%s\nminivmm (exit %d):\n%s", codes[0], outs[0], codes[1], outs[1])
			}
			for i := range images[0] {
				if !bytes.Equal(images[0][i], images[1][i]) {
					t.Errorf("child %d differs afterwards", i)
				}
			}
		})
	}
}
