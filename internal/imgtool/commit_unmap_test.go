package imgtool

import (
	"path/filepath"
	"testing"
)

// TestImgCommitZeroesUnmap: qemu-img commit (in QEMU a mirror job with
// unmap, on a chain opened with discard=unmap) deallocates the base's
// clusters the top's zeroes cover; the base and the top map and check
// as after QEMU 7.2's commit (iotest 313).
func TestImgCommitZeroesUnmap(t *testing.T) {
	crNeedQemu(t)
	t.Parallel()
	for _, tc := range []struct {
		name, baseFmt, baseOpts string
	}{
		{"qcow2-v3", "qcow2", "cluster_size=4096"},
		{"qcow2-v3-refcount64", "qcow2", "cluster_size=4096,refcount_bits=64"},
		{"qcow2-v2", "qcow2", "cluster_size=4096,compat=0.10"},
		{"qcow2-64k", "qcow2", "cluster_size=65536"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, ref := t.TempDir(), t.TempDir()
			base := "base." + tc.baseFmt
			args := []string{"create", "-q", "-f", tc.baseFmt}
			if tc.baseOpts != "" {
				args = append(args, "-o", tc.baseOpts)
			}
			crRun(t, dir, "qemu-img", append(args, base, "2M")...)
			crRun(t, dir, "qemu-io", "-f", tc.baseFmt, "-c", "write -P 1 0 2M", base)
			crRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096",
				"-b", base, "-F", tc.baseFmt, "top.qcow2")
			crRun(t, dir, "qemu-io", "-c", "write -z 0 512k", "-c", "write -z 600k 4k",
				"-c", "write -z 1000k 2k", "-c", "write -z -u 1M 256k", "-c", "write -P 2 1200k 8k",
				"-c", "write -z 1900k 148k", "top.qcow2")
			files := []string{base, "top.qcow2"}
			crCopyDir(t, dir, ref, files)
			code, out, errs := crImg(t, dir, "commit", "top.qcow2")
			if code != 0 || out != "Image committed.\n" || errs != "" {
				t.Fatalf("commit: %d %q %q", code, out, errs)
			}
			crRun(t, ref, "qemu-img", "commit", "top.qcow2")
			for _, f := range files {
				fa := []string{"-f", "qcow2"}
				if f == base {
					fa = []string{"-f", tc.baseFmt}
				}
				for _, cmd := range [][]string{{"map", "--output=json"}, {"check"}} {
					a := append(append(append([]string{}, cmd...), fa...), f)
					got, want := crRun(t, dir, "qemu-img", a...), crRun(t, ref, "qemu-img", a...)
					if got != want {
						t.Errorf("%v %s: minivmm's commit left\n%s\nqemu-img's\n%s", cmd, f, got, want)
					}
				}
			}
			crIdentical(t, dir, "-f", tc.baseFmt, "-F", tc.baseFmt, base, filepath.Join(ref, base))
		})
	}
}
