package imgtool

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/qemuopen"
)

func icNeedQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img not installed; apt-get install qemu-utils")
		}
		t.Skip("qemu-img not installed; apt-get install qemu-utils")
	}
}

func icRun(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := runImg(append([]string{"create"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

// icInfo is qemu-img info's JSON without the fields that name the file or
// measure its allocation.
func icInfo(t *testing.T, path string) map[string]any {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "--output=json", path).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"filename", "actual-size", "full-backing-filename"} {
		delete(m, k)
	}
	return m
}

func icCheck(t *testing.T, path string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", "--output=json", path).Output()
	if err != nil {
		t.Fatalf("qemu-img check %s: %v\n%s", path, err, out)
	}
	var r map[string]any
	json.Unmarshal(out, &r)
	for _, k := range []string{"check-errors", "corruptions", "leaks"} {
		if v, ok := r[k]; ok && v.(float64) != 0 {
			t.Fatalf("qemu-img check %s: %s", path, out)
		}
	}
}

// icRead opens path with minivmm's driver read-only and returns its data.
func icRead(t *testing.T, path, format string, n int64) []byte {
	t.Helper()
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	g := block.NewGraph(reg)
	defer g.Close()
	node, err := g.Add(block.Options{"driver": format, "read-only": true,
		"file": block.Options{"driver": "file", "filename": path}})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, min(n, node.Length()))
	if _, err := node.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	return buf
}

func TestImgCreateMatrix(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	pattern := bytes.Repeat([]byte{0xa5}, 1<<20)
	if err := os.WriteFile(base, pattern, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		back bool
	}{
		{"default", []string{"-f", "qcow2"}, false},
		{"512", []string{"-f", "qcow2", "-o", "cluster_size=512"}, false},
		{"4k", []string{"-f", "qcow2", "-o", "cluster_size=4k"}, false},
		{"2M", []string{"-f", "qcow2", "-o", "cluster_size=2M"}, false},
		{"compat010", []string{"-f", "qcow2", "-o", "compat=0.10"}, false},
		{"compat11", []string{"-f", "qcow2", "-o", "compat=1.1"}, false},
		{"rc1", []string{"-f", "qcow2", "-o", "refcount_bits=1"}, false},
		{"rc64", []string{"-f", "qcow2", "-o", "refcount_bits=64"}, false},
		{"lazy", []string{"-f", "qcow2", "-o", "lazy_refcounts=on"}, false},
		{"extl2", []string{"-f", "qcow2", "-o", "extended_l2=on,cluster_size=32k"}, false},
		{"zstd", []string{"-f", "qcow2", "-o", "compression_type=zstd"}, false},
		{"meta", []string{"-f", "qcow2", "-o", "preallocation=metadata,cluster_size=4k"}, false},
		{"full", []string{"-f", "qcow2", "-o", "preallocation=full"}, false},
		{"falloc", []string{"-f", "qcow2", "-o", "preallocation=falloc"}, false},
		{"meta-rc1-512", []string{"-f", "qcow2", "-o", "preallocation=metadata,cluster_size=512,refcount_bits=1"}, false},
		{"backing-F", []string{"-f", "qcow2", "-b", "base.raw", "-F", "raw"}, true},
		{"backing-u", []string{"-f", "qcow2", "-u", "-b", "base.raw", "-F", "raw"}, true},
		{"backing-extl2-meta", []string{"-f", "qcow2", "-o", "extended_l2=on,preallocation=metadata", "-b", "base.raw", "-F", "raw"}, true},
		{"raw", []string{"-f", "raw"}, false},
		{"raw-full", []string{"-f", "raw", "-o", "preallocation=full"}, false},
		{"4T", []string{"-f", "qcow2"}, false},
		{"4T-4k", []string{"-f", "qcow2", "-o", "cluster_size=4k"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			size := "1M"
			if strings.HasPrefix(c.name, "4T") {
				size = "4T"
			}
			mine, theirs := filepath.Join(dir, c.name+".m"), filepath.Join(dir, c.name+".q")
			code, out, errs := icRun(append(append([]string{}, c.args...), mine, size)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			qargs := append(append([]string{"create"}, c.args...), theirs, size)
			qout, err := exec.Command("qemu-img", qargs...).CombinedOutput()
			if err != nil {
				t.Fatalf("qemu-img create: %v\n%s", err, qout)
			}
			if want := strings.Replace(string(qout), theirs, mine, 1); out != want {
				t.Errorf("stdout %q, want %q", out, want)
			}
			format := "qcow2"
			if c.args[1] == "raw" {
				format = "raw"
			} else {
				icCheck(t, mine)
			}
			if a, b := icInfo(t, mine), icInfo(t, theirs); fmt.Sprint(a) != fmt.Sprint(b) {
				t.Errorf("info:\n%v\nwant\n%v", a, b)
			}
			data := icRead(t, mine, format, 1<<20)
			want := make([]byte, len(data))
			if c.back && !strings.Contains(c.name, "extl2") {
				want = pattern[:len(data)]
			}
			if c.back && strings.Contains(c.name, "extl2") {
				want = pattern[:len(data)] // unallocated subclusters read the backing file
			}
			if !bytes.Equal(data, want) {
				t.Errorf("reads differ from the expected data")
			}
		})
	}
}

func TestImgCreateBackingSize(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "b.raw"), make([]byte, 3<<20), 0o644)
	p := filepath.Join(dir, "o.qcow2")
	if code, _, errs := icRun("-q", "-f", "qcow2", "-b", "b.raw", "-F", "raw", p); code != 0 {
		t.Fatal(errs)
	}
	if v := icInfo(t, p)["virtual-size"]; v != float64(3<<20) {
		t.Fatalf("virtual-size %v", v)
	}
	icCheck(t, p)
}

func TestImgCreateErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "x.qcow2")
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	_, realErr := exec.LookPath("qemu-img")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-f", "qcow2", "-o", "cluster_size=3000", p, "1M"}, "qemu-img: " + p + ": Cluster size must be a power of two between 512 and 2048k\n"},
		{[]string{"-f", "qcow2", "-o", "refcount_bits=3", p, "1M"}, "qemu-img: " + p + ": Refcount width must be a power of two and may not exceed 64 bits\n"},
		{[]string{"-f", "qcow2", "-o", "compat=0.10,refcount_bits=8", p, "1M"}, "qemu-img: " + p + ": Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)\n"},
		{[]string{"-f", "qcow2", "-o", "compat=0.10,lazy_refcounts=on", p, "1M"}, "qemu-img: " + p + ": Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)\n"},
		{[]string{"-f", "qcow2", "-o", "extended_l2=on,cluster_size=4k", p, "1M"}, "qemu-img: " + p + ": Extended L2 entries are only supported with cluster sizes of at least 16384 bytes\n"},
		{[]string{"-f", "qcow2", "-o", "compat=2", p, "1M"}, "qemu-img: " + p + ": Parameter 'version' does not accept value '2'\n"},
		{[]string{"-f", "qcow2", "-o", "bogus=1", p, "1M"}, "qemu-img: " + p + ": Invalid parameter 'bogus'\n"},
		{[]string{"-f", "qcow2", "-o", "size=1M", p, "1M"}, "qemu-img: " + p + ": The image size must be specified only once\n"},
		{[]string{"-f", "qcow2", p}, "qemu-img: " + p + ": Image creation needs a size parameter\n"},
		{[]string{"-f", "qcow2", "-b", "nonexist", "-F", "raw", p}, "qemu-img: " + p + ": Could not open '" + filepath.Join(dir, "nonexist") + "': No such file or directory\nCould not open backing image.\n"},
		{[]string{"-f", "qcow2", "-b", "nonexist", p, "1M"}, "qemu-img: " + p + ": Could not open '" + filepath.Join(dir, "nonexist") + "': No such file or directory\nCould not open backing image.\n"},
		{[]string{"-f", "qcow2", "-u", "-b", "nonexist", p, "1M"}, "qemu-img: " + p + ": Backing file specified without backing format\n"},
		{[]string{"-f", "qcow2", "-b", base, p}, "qemu-img: " + p + ": Backing file specified without backing format\nDetected format of raw."},
		{[]string{"-f", "qcow2", "-o", "cluster_size=512", p, "4T"}, "qemu-img: " + p + ": The image size is too large for file format 'qcow2' (try using a larger cluster size)\n"},
		{[]string{"-f", "raw", "-o", "preallocation=metadata", p, "1M"}, "qemu-img: " + p + ": Unsupported preallocation mode: metadata\n"},
		{[]string{"-f", "foo", p, "1M"}, "qemu-img: " + p + ": Unknown file format 'foo'\n"},
		{[]string{"-f", "qcow2", p, "1Q"}, "qemu-img: Invalid image size specified. You may use k, M, G, T, P or E suffixes for\nqemu-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.\n"},
		{[]string{"-f", "qcow2", p, "1M", "2"}, "qemu-img: Unexpected argument: 2\nTry 'qemu-img --help' for more information\n"},
	} {
		code, _, errs := icRun(c.args...)
		if code != 1 || errs != c.want {
			t.Errorf("%v: exit %d, %q; want 1, %q", c.args, code, errs, c.want)
		}
		if realErr == nil {
			// The same command with qemu-img says the same.
			var realStderr bytes.Buffer
			cmd := exec.Command("qemu-img", append([]string{"create"}, c.args...)...)
			cmd.Stderr = &realStderr
			cmd.Run()
			if got := realStderr.String(); got != c.want {
				t.Errorf("%v: qemu-img says %q; want %q", c.args, got, c.want)
			}
			os.Remove(p)
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%v: left %s behind", c.args, p)
			os.Remove(p)
		}
	}
}

func TestImgCreateFdset(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	p := filepath.Join(t.TempDir(), "fd.qcow2")
	os.WriteFile(p, bytes.Repeat([]byte{1}, 1<<20), 0o644)
	fd, err := unix.Open(p, unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// addFds takes the fd over and closes it.
	code, _, errs := icRun("-q", "-f", "qcow2", "-add-fd", fmt.Sprintf("fd=%d,set=3", fd), "/dev/fdset/3", "64M")
	if code != 0 {
		unix.Close(fd)
		t.Fatal(errs)
	}
	icCheck(t, p)
	if v := icInfo(t, p)["virtual-size"]; v != float64(64<<20) {
		t.Fatalf("virtual-size %v", v)
	}
}

// "file:" names the file after it, colons and all, as qemu-img's file
// driver takes it; the Formatting line keeps the name as given.
func TestImgCreateFilePrefix(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	p := filepath.Join(t.TempDir(), "a:b.qcow2")
	code, out, errs := icRun("-f", "qcow2", "file:"+p, "1M")
	if code != 0 {
		t.Fatal(errs)
	}
	if want := "Formatting 'file:" + p + "', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=1048576 lazy_refcounts=off refcount_bits=16\n"; out != want {
		t.Errorf("got %q, want %q", out, want)
	}
	icCheck(t, p)
}
