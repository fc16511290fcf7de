package imgtool

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestImgAmendRefcountProgressDifferential: `amend -p -o refcount_bits=`
// prints the steps qemu-img 7.2 prints, whose walks over the old
// refcount table repeat while allocating the new structures allocates
// more (QEMU's iotest 112: 66.67% back to 50.00%).
func TestImgAmendRefcountProgressDifferential(t *testing.T) {
	t.Parallel()
	imgReadNeedQemu(t)
	for _, c := range []struct {
		create   string
		size     string
		write    string // bytes at 0
		newWidth int
	}{
		{"refcount_bits=1,cluster_size=512", "64k", "29696", 64}, // iotest 112's extra walk
		{"refcount_bits=16,cluster_size=512", "64k", "29696", 64},
		{"refcount_bits=16", "64M", "1M", 64},
		{"refcount_bits=16", "64M", "3M", 1},
		{"refcount_bits=16,cluster_size=512", "16M", "4M", 8},
		{"refcount_bits=64,cluster_size=4096", "64M", "9M", 2},
		{"refcount_bits=2,cluster_size=1024", "8M", "2M", 32},
	} {
		t.Run(fmt.Sprintf("%s/%s/%d", c.create, c.write, c.newWidth), func(t *testing.T) {
			t.Parallel()
			var out [2]string
			for j := range out {
				img := filepath.Join(t.TempDir(), "t.qcow2")
				imgReadRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", c.create, img, c.size)
				imgReadRun(t, "qemu-io", "-c", "write 0 "+c.write, img)
				args := []string{"amend", "-p", "-o", fmt.Sprintf("refcount_bits=%d", c.newWidth), img}
				if j == 0 {
					b, err := exec.Command("qemu-img", args...).CombinedOutput()
					if err != nil {
						t.Fatalf("qemu-img amend: %v: %s", err, b)
					}
					out[j] = string(b)
				} else {
					var o, e bytes.Buffer
					if code := runImg(args, &o, &e); code != 0 {
						t.Fatalf("minivmm img amend: exit %d: %s", code, e.String())
					}
					out[j] = o.String()
				}
				imgReadRun(t, "qemu-img", "check", "-q", img)
			}
			if out[0] != out[1] {
				t.Errorf("qemu-img:\n%q\nminivmm img:\n%q", out[0], out[1])
			}
		})
	}
}
