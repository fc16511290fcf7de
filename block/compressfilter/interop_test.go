package compressfilter_test

import (
	"bytes"
	"encoding/json"
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

func needQemu(t *testing.T) {
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

var timing = regexp.MustCompile(`(?m)^[0-9.]+ (?:[KMGTPE]iB|bytes), \d+ ops; .*$`)

// TestCompressInterop runs the same qemu-io commands through a compress
// filter with qemu-io 7.2 and with minivmm's io, on images qemu-img
// made alike, and wants the same output, the same guest data and as
// many compressed clusters (qemu-img check) afterwards.
func TestCompressInterop(t *testing.T) {
	needQemu(t)
	for _, tc := range []struct {
		name   string
		create string // qemu-img create -o
		child  string // the filter's child's driver
		cmds   []string
	}{
		{"whole and partial clusters", "cluster_size=64k", "qcow2",
			[]string{"write -P 0xbb 0 229376", "write -P 0xcc 278528 229376", "read -P 0xbb 0 229376", "read -P 0 229376 49152"}},
		{"a cluster written twice", "cluster_size=64k", "qcow2",
			[]string{"write -P 1 0 64k", "write -P 2 0 64k", "read -P 1 0 64k"}},
		{"zeroes and discards pass", "cluster_size=4k", "qcow2",
			[]string{"write -P 3 0 16k", "write -z 16k 16k", "discard 32k 4k", "read -P 0 16k 16k", "flush"}},
		{"zstd", "cluster_size=64k,compression_type=zstd", "qcow2",
			[]string{"write -P 9 64k 128k", "aio_write -P 8 512k 64k", "aio_flush", "read -P 8 512k 64k"}},
		{"raw below", "", "raw", []string{"read 0 512"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fdtest.Check(t)
			var outs, checks [2]string
			var codes [2]int
			var data [2][]byte
			for k, tool := range []string{"qemu", "minivmm"} {
				dir := t.TempDir()
				path := filepath.Join(dir, "t.img")
				format := tc.child
				args := []string{"create", "-q", "-f", format}
				if tc.create != "" {
					args = append(args, "-o", tc.create)
				}
				if out, err := exec.Command("qemu-img", append(args, path, "1M")...).CombinedOutput(); err != nil {
					t.Fatalf("qemu-img create: %v\n%s", err, out)
				}
				io := []string{"--image-opts"}
				for _, c := range tc.cmds {
					io = append(io, "-c", c)
				}
				opts := "driver=compress,file.driver=" + format + ",file.file.driver=file,file.file.filename=" + path
				io = append(io, opts)
				var out bytes.Buffer
				if tool == "qemu" {
					cmd := exec.Command("qemu-io", io...)
					cmd.Stdout, cmd.Stderr = &out, &out
					err := cmd.Run()
					if ee, ok := err.(*exec.ExitError); ok {
						codes[k] = ee.ExitCode()
					} else if err != nil {
						t.Fatal(err)
					}
				} else {
					codes[k] = iotool.Run(qtool.Program{Name: "qemu-io", Version: "test"}, io, strings.NewReader(""), &out, &out)
				}
				outs[k] = strings.ReplaceAll(timing.ReplaceAllString(out.String(), "TIMING"), dir, "DIR")
				if format == "qcow2" {
					c, _ := exec.Command("qemu-img", "check", "--output=json", path).Output()
					var res struct {
						Compressed int64 `json:"compressed-clusters"`
						Corrupt    int64 `json:"corruptions"`
						Leaks      int64 `json:"leaks"`
					}
					if err := json.Unmarshal(c, &res); err != nil {
						t.Fatalf("qemu-img check: %v\n%s", err, c)
					}
					if res.Corrupt != 0 || res.Leaks != 0 {
						t.Errorf("%s: check: %s", tool, c)
					}
					checks[k] = strings.Repeat("c", int(res.Compressed))
				}
				raw := path + ".raw"
				if out, err := exec.Command("qemu-img", "convert", "-O", "raw", path, raw).CombinedOutput(); err != nil {
					t.Fatalf("qemu-img convert: %v\n%s", err, out)
				}
				var err error
				if data[k], err = os.ReadFile(raw); err != nil {
					t.Fatal(err)
				}
			}
			if outs[0] != outs[1] || codes[0] != codes[1] {
				t.Errorf("qemu-io (exit %d):\n%s\nminivmm (exit %d):\n%s", codes[0], outs[0], codes[1], outs[1])
			}
			if checks[0] != checks[1] {
				t.Errorf("compressed clusters: qemu-io %d, minivmm %d", len(checks[0]), len(checks[1]))
			}
			t.Logf("compressed clusters: %d; output:\n%s", len(checks[1]), outs[1])
			if !bytes.Equal(data[0], data[1]) {
				t.Error("the images read differently")
			}
		})
	}
}
