package iotool

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestZeroSubclustersDifferential: zero writes and discards on an image
// with extended L2 leave the subcluster bitmaps qemu-io 7.2 leaves
// (QEMU's iotest 271): whole clusters read as zeroes through the bitmap,
// partial ones get zero bits, a request cutting a compressed cluster is
// written as data whole, a discarded cluster reads as zeroes. Both
// images then hold the same guest data (qemu-img compare).
func TestZeroSubclustersDifferential(t *testing.T) {
	t.Parallel()
	bin := qemuIO(t)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img not installed (CI=true)")
		}
		t.Skip("qemu-img not installed")
	}
	const k = 1024
	const c = 64 * k
	run := func(t *testing.T, tool int, args ...string) {
		t.Helper()
		var out, errOut string
		var code int
		if tool == 0 {
			out, errOut, code = runQemuIO(t, bin, "", args...)
		} else {
			out, errOut, code = ioRun(args, "")
		}
		if code != 0 {
			t.Fatalf("tool %d %q: exit %d: %s%s", tool, args, code, out, errOut)
		}
	}
	for _, backing := range []bool{false, true} {
		for _, tc := range []struct {
			name  string
			setup []string // by qemu-io, on both images
			zero  []string // by each tool
		}{
			{"unallocated", nil, []string{"write -q -z 0 192k", "write -q -z 224k 128k", "write -q -z 415k 128k"}},
			{"allocated", []string{"write -q -P 1 0 640k"},
				[]string{"write -q -z 0 192k", "write -q -z 224k 128k", "write -q -z 415k 128k", "write -q -z -u 512k 64k"}},
			{"compressed", compressCmds(18, 28),
				[]string{fmt.Sprintf("write -q -z %d 192k", 18*c), fmt.Sprintf("write -q -z %d 128k", 21*c+32*k),
					fmt.Sprintf("write -q -z %d 129k", 24*c+30*k+1), fmt.Sprintf("write -q -z %d 128k", 27*c+30*k+1)}},
			{"other", nil, []string{fmt.Sprintf("write -q -z %d 8k", 1951*k), fmt.Sprintf("write -q -z %d 35k", 2048*k)}},
			{"discard", []string{"write -q -P 2 0 128k"}, []string{"discard -q 0 128k", "discard -q 128k 64k"}},
		} {
			name := fmt.Sprintf("%s/backing=%v", tc.name, backing)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var imgs [2]string
				var l2 [2][]uint64
				for j := range imgs {
					dir := t.TempDir()
					img := filepath.Join(dir, "t.qcow2")
					create := []string{"create", "-q", "-f", "qcow2", "-o", "extended_l2=on", img, "2132992"}
					if backing {
						base := filepath.Join(dir, "base.raw")
						if out, err := exec.Command(qemuImg, "create", "-q", "-f", "raw", base, "2132992").CombinedOutput(); err != nil {
							t.Fatalf("%v: %s", err, out)
						}
						run(t, 0, "-f", "raw", "-c", "write -q -P 0xff 0 2132992", base)
						create = []string{"create", "-q", "-f", "qcow2", "-o", "extended_l2=on", "-F", "raw", "-b", base, img, "2132992"}
					}
					if out, err := exec.Command(qemuImg, create...).CombinedOutput(); err != nil {
						t.Fatalf("%v: %s", err, out)
					}
					for _, cmd := range tc.setup {
						run(t, 0, "-c", cmd, img)
					}
					for _, cmd := range tc.zero {
						run(t, j, "-c", cmd, img)
					}
					imgs[j] = img
					l2[j] = l2Bitmaps(t, img)
					if out, err := exec.Command(qemuImg, "check", "-q", img).CombinedOutput(); err != nil {
						t.Errorf("tool %d: qemu-img check: %v: %s", j, err, out)
					}
				}
				for i := range max(len(l2[0]), len(l2[1])) {
					var a, b uint64
					if i < len(l2[0]) {
						a = l2[0][i]
					}
					if i < len(l2[1]) {
						b = l2[1][i]
					}
					if a != b {
						t.Errorf("cluster %d: allocated/bitmap %#x after qemu-io, %#x after minivmm io", i/2, l2[0], l2[1])
						break
					}
				}
				if out, err := exec.Command(qemuImg, "compare", imgs[0], imgs[1]).CombinedOutput(); err != nil {
					t.Errorf("qemu-img compare: %v: %s", err, out)
				}
			})
		}
	}
}

func compressCmds(from, to int) []string {
	var cmds []string
	for i := from; i <= to; i++ {
		cmds = append(cmds, fmt.Sprintf("write -q -c -P %d %d 64k", i, i*64<<10))
	}
	return cmds
}

// l2Bitmaps reads the first L2 table of an extended L2 image: per
// cluster, whether it has a host cluster (1, 2 if compressed), and its
// bitmap. Host offsets are left out: the tools may place clusters
// differently.
func l2Bitmaps(t *testing.T, img string) []uint64 {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	l1 := be.Uint64(b[40:])
	l2 := be.Uint64(b[l1:]) & 0x00fffffffffffe00
	if l2 == 0 {
		return nil
	}
	var out []uint64
	for i := uint64(0); i < 64; i++ {
		e, bm := be.Uint64(b[l2+16*i:]), be.Uint64(b[l2+16*i+8:])
		kind := uint64(0)
		switch {
		case e&(1<<62) != 0:
			kind = 2
		case e&0x00fffffffffffe00 != 0:
			kind = 1
		}
		out = append(out, kind, bm)
	}
	return out
}

// TestInvalidSubclusterEntryDifferential: an extended L2 entry whose
// bitmap has a subcluster both allocated and zero (or allocated without
// a host cluster) is corruption on read and on write, in qemu-io's words
// (QEMU's iotest 271).
func TestInvalidSubclusterEntryDifferential(t *testing.T) {
	t.Parallel()
	bin := qemuIO(t)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img not installed (CI=true)")
		}
		t.Skip("qemu-img not installed")
	}
	for _, c := range []struct {
		setup  string
		entry  int64  // L2 index poked
		bitmap uint64 // written over the entry's bitmap
		cmd    string
	}{
		{"write -q 32k 128k", 1, 1<<32 | 0xffffffff, "read 0 192k"},
		{"write -q 32k 128k", 1, 1<<32 | 0xffffffff, "write 0 192k"},
		{"write -q 64k 64k", 0, 1, "read -q 0 1k"},
		{"write -q 64k 64k", 0, 1, "write -q 0 1k"},
		{"write -q 64k 64k", 1, 1<<32 | 1, "write -q 64k 1k"},
	} {
		var got [2][3]string
		for j := range got {
			img := filepath.Join(t.TempDir(), "t.qcow2")
			if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", img, "1M").CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if out, errOut, code := runQemuIO(t, bin, "", "-c", c.setup, img); code != 0 {
				t.Fatalf("%s%s", out, errOut)
			}
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			l2 := int64(binary.BigEndian.Uint64(b[binary.BigEndian.Uint64(b[40:]):]) & 0x00fffffffffffe00)
			var bm [8]byte
			binary.BigEndian.PutUint64(bm[:], c.bitmap)
			f, err := os.OpenFile(img, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.WriteAt(bm[:], l2+16*c.entry+8)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			var out, errOut string
			var code int
			if j == 0 {
				out, errOut, code = runQemuIO(t, bin, "", "-c", c.cmd, img)
			} else {
				out, errOut, code = ioRun([]string{"-c", c.cmd, img}, "")
			}
			got[j] = [3]string{normalize(out), errOut, fmt.Sprint(code)}
		}
		if got[0] != got[1] {
			t.Errorf("%q, entry %d bitmap %#x:\nqemu-io:\n%s%s\nexit %s\nminivmm io:\n%s%s\nexit %s", c.cmd, c.entry, c.bitmap,
				got[0][0], got[0][1], got[0][2], got[1][0], got[1][1], got[1][2])
		}
	}
}
