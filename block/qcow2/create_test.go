package qcow2

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func createNeedQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img not installed; apt-get install qemu-utils")
		}
		t.Skip("qemu-img not installed; apt-get install qemu-utils")
	}
}

// createFile lays out an image at a new path through FdTarget.
func createFile(t *testing.T, o CreateOptions) (string, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.qcow2")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return p, Create(FdTarget(f.Fd()), o)
}

func TestCreateMatrix(t *testing.T) {
	g := fixture(t)
	cases := []struct {
		name string
		o    CreateOptions
	}{
		{"default", CreateOptions{Size: 1 << 20}},
		{"v2", CreateOptions{Size: 1 << 20, Version: 2}},
		{"512-rc1", CreateOptions{Size: 3 << 20, ClusterSize: 512, RefcountBits: 1}},
		{"4k-rc64-meta", CreateOptions{Size: 1 << 20, ClusterSize: 4096, RefcountBits: 64, Preallocation: "metadata"}},
		{"2M-full", CreateOptions{Size: 5 << 20, ClusterSize: 2 << 20, Preallocation: "full"}},
		{"extl2-zstd-lazy", CreateOptions{Size: 1 << 20, ClusterSize: 16384, ExtendedL2: true, Compression: "zstd", LazyRefcounts: true, Preallocation: "metadata"}},
		{"4T-4k", CreateOptions{Size: 4 << 40, ClusterSize: 4096}},
		{"odd-size", CreateOptions{Size: 1000}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := createFile(t, c.o)
			if err != nil {
				t.Fatal(err)
			}
			n, err := openQcow2(g, p, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Delete(n.Name())
			want := int64((c.o.Size + 511) &^ 511)
			if n.Length() != want {
				t.Fatalf("length %d, want %d", n.Length(), want)
			}
			buf := make([]byte, min(want, 1<<20))
			if _, err := n.ReadAt(buf, want-int64(len(buf))); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, make([]byte, len(buf))) {
				t.Fatal("image does not read as zeroes")
			}
			if _, err := exec.LookPath("qemu-img"); err != nil {
				return
			}
			out, err := exec.Command("qemu-img", "check", "--output=json", p).Output()
			if err != nil {
				t.Fatalf("qemu-img check: %v\n%s", err, out)
			}
			var r map[string]any
			json.Unmarshal(out, &r)
			for _, k := range []string{"check-errors", "corruptions", "leaks"} {
				if v, ok := r[k]; ok && v.(float64) != 0 {
					t.Fatalf("qemu-img check: %s", out)
				}
			}
		})
	}
}

func TestCreateQemuImgPresent(t *testing.T) {
	fixture(t)
	createNeedQemuImg(t)
}

func TestCreateRefusesBadOptions(t *testing.T) {
	fixture(t)
	for _, c := range []struct {
		o    CreateOptions
		want string
	}{
		{CreateOptions{Size: 1, ClusterSize: 3000}, "Cluster size must be a power of two between 512 and 2048k"},
		{CreateOptions{Size: 1, ClusterSize: 4 << 20}, "Cluster size must be a power of two between 512 and 2048k"},
		{CreateOptions{Size: 1, RefcountBits: 3}, "Refcount width must be a power of two and may not exceed 64 bits"},
		{CreateOptions{Size: 1, Version: 2, RefcountBits: 8}, "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)"},
		{CreateOptions{Size: 1, Version: 2, LazyRefcounts: true}, "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)"},
		{CreateOptions{Size: 1, ExtendedL2: true, ClusterSize: 4096}, "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes"},
		{CreateOptions{Size: 1, Version: 2, Compression: "zstd"}, "Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)"},
		{CreateOptions{Size: 4 << 40, ClusterSize: 512}, "The image size is too large for file format 'qcow2' (try using a larger cluster size)"},
		{CreateOptions{Size: 1, BackingFile: "b", Preallocation: "metadata"}, "Backing file and preallocation can only be used at the same time if extended_l2 is on"},
	} {
		if err := ValidateCreate(c.o); err == nil || err.Error() != c.want {
			t.Errorf("%+v: %v, want %q", c.o, err, c.want)
		}
	}
}
