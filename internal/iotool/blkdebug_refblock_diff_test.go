package iotool

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBlkdebugRefblockDifferential: errors injected after qcow2's
// refcount events (QEMU's iotest 026) fail the same writes as in qemu-io,
// and an error that outlives the write (once=off) fails the write-back at
// close with qemu-io's two lines, one per cache. Every image left behind
// passes qemu-img check (leaks allowed, as after QEMU).
func TestBlkdebugRefblockDifferential(t *testing.T) {
	t.Parallel()
	bin := qemuIO(t)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img not installed (CI=true)")
		}
		t.Skip("qemu-img not installed")
	}
	type tc struct {
		event, errno, once, vmstate, cluster, size string
	}
	var cases []tc
	for _, ev := range []string{"refblock_load", "refblock_update_part", "refblock_alloc", "cluster_alloc", "l2_alloc_write"} {
		for _, once := range []string{"on", "off"} {
			for _, vm := range []string{"", "-b"} {
				cases = append(cases, tc{ev, "5", once, vm, "1024", "128k"})
			}
		}
	}
	// The refcount table grows (512-byte clusters: one table cluster
	// covers 8 MiB).
	for _, ev := range []string{"refblock_alloc_hookup", "refblock_alloc_write", "refblock_alloc_write_blocks",
		"refblock_alloc_write_table", "refblock_alloc_switch_table"} {
		for _, once := range []string{"on", "off"} {
			cases = append(cases, tc{ev, "28", once, "", "512", "12M"})
		}
	}
	for _, c := range cases {
		name := fmt.Sprintf("%s/%s/once=%s/%s", c.event, c.errno, c.once, c.vmstate)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var got [2][3]string
			for j := range got {
				dir := t.TempDir()
				img, conf := filepath.Join(dir, "t.qcow2"), filepath.Join(dir, "blkdebug.conf")
				if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", "-o", "cluster_size="+c.cluster, img, "1G").CombinedOutput(); err != nil {
					t.Fatalf("qemu-img create: %v: %s", err, out)
				}
				rules := fmt.Sprintf("[inject-error]\nevent = %q\nerrno = %q\nimmediately = \"off\"\nonce = %q\n", c.event, c.errno, c.once)
				if err := os.WriteFile(conf, []byte(rules), 0o600); err != nil {
					t.Fatal(err)
				}
				args := []string{"-c", strings.TrimSpace("write " + c.vmstate + " 0 " + c.size), "blkdebug:" + conf + ":" + img}
				var out, errOut string
				var code int
				if j == 0 {
					out, errOut, code = runQemuIO(t, bin, "", args...)
				} else {
					out, errOut, code = ioRun(args, "")
				}
				got[j] = [3]string{normalize(out), errOut, fmt.Sprint(code)}
				if out, err := exec.Command(qemuImg, "check", "-q", img).CombinedOutput(); err != nil {
					if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 { // 3: leaks only
						t.Errorf("tool %d: qemu-img check: %v: %s", j, err, out)
					}
				}
			}
			// A failed close: qemu-io exits 0, minivmm io 1 (on purpose).
			if strings.Contains(got[1][1], "Failed to flush") && got[0][2] == "0" && got[1][2] == "1" {
				got[1][2] = "0"
			}
			if got[0] != got[1] {
				t.Errorf("qemu-io:\n%s%s\nexit %s\nminivmm io:\n%s%s\nexit %s",
					got[0][0], got[0][1], got[0][2], got[1][0], got[1][1], got[1][2])
			}
		})
	}
}

// TestUnalignedRefblockDifferential: a refcount table entry pointing
// inside a cluster is found when a write needs the refcounts it covers
// (QEMU's iotest 305): the image is marked corrupt with QEMU's message
// and the write fails, as in qemu-io.
func TestUnalignedRefblockDifferential(t *testing.T) {
	t.Parallel()
	bin := qemuIO(t)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img not installed (CI=true)")
		}
		t.Skip("qemu-img not installed")
	}
	var got [2][3]string
	var hdr [2][]byte
	for j := range got {
		img := filepath.Join(t.TempDir(), "t.qcow2")
		if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", "-o", "refcount_bits=64,cluster_size=1k", img, "1M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, out)
		}
		// The first 123k count in the first refcount block, the cluster
		// of guest offset 123k in the second.
		if out, errOut, code := runQemuIO(t, bin, "", append(cmds("write 0 124k", "discard 121k 1k", "discard 123k 1k"), img)...); code != 0 {
			t.Fatalf("qemu-io: %s%s", out, errOut)
		}
		data, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		reftable := int64(binary.BigEndian.Uint64(data[48:]))
		f, err := os.OpenFile(img, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteAt([]byte{6}, reftable+14)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		args := append(cmds("write 121k 3k"), img)
		var out, errOut string
		var code int
		if j == 0 {
			out, errOut, code = runQemuIO(t, bin, "", args...)
		} else {
			out, errOut, code = ioRun(args, "")
		}
		got[j] = [3]string{normalize(out), errOut, fmt.Sprint(code)}
		if data, err = os.ReadFile(img); err != nil {
			t.Fatal(err)
		}
		hdr[j] = data[72:80] // incompatible features: the corrupt bit
	}
	if got[0] != got[1] || string(hdr[0]) != string(hdr[1]) {
		t.Errorf("qemu-io:\n%s%s\nexit %s, features %x\nminivmm io:\n%s%s\nexit %s, features %x",
			got[0][0], got[0][1], got[0][2], hdr[0], got[1][0], got[1][1], got[1][2], hdr[1])
	}
	if !strings.Contains(got[1][1], "Refblock offset 0x20600 unaligned (reftable index: 0x1)") {
		t.Errorf("no corruption message: %q", got[1][1])
	}
}

// TestBlkdebugUnderRawDifferential: a raw node tells the blkdebug under
// it of its reads and writes (read_aio, write_aio), as QEMU's raw does:
// an error injected in a qcow2 data file under a raw node fails the
// write (QEMU's iotest 289) and leaves no data cluster freed, and a raw
// image's read fails too.
func TestBlkdebugUnderRawDifferential(t *testing.T) {
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
		event string
		cmds  []string
		raw   bool // a raw image, else qcow2 with its data file under raw
	}{
		{"write_aio", cmds("write 0 64k", "read -P 0 0 64k"), false},
		{"write_aio", cmds("write -P 1 0 4k", "write -P 2 0 4k", "read -P 2 0 4k"), true},
		{"read_aio", cmds("write -P 1 0 4k", "read -P 1 0 4k", "read -P 1 0 4k"), true},
	} {
		var got [2][3]string
		for j := range got {
			dir := t.TempDir()
			img, conf := filepath.Join(dir, "t.img"), filepath.Join(dir, "blkdebug.conf")
			create := []string{"create", "-q", "-f", "qcow2", "-o", "data_file=" + img + ".data", img, "64k"}
			if c.raw {
				create = []string{"create", "-q", "-f", "raw", img, "64k"}
			}
			if out, err := exec.Command(qemuImg, create...).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create: %v: %s", err, out)
			}
			if err := os.WriteFile(conf, []byte(fmt.Sprintf("[inject-error]\nevent = %q\nerrno = \"5\"\nonce = \"on\"\n", c.event)), 0o600); err != nil {
				t.Fatal(err)
			}
			blkdebug := fmt.Sprintf(`{"driver": "blkdebug", "config": %q, "image": {"driver": "file", "filename": %q}}`, conf, img+".data")
			name := fmt.Sprintf(`json:{"driver": "qcow2", "file": {"driver": "file", "filename": %q}, "data-file": {"driver": "raw", "file": %s}}`, img, blkdebug)
			if c.raw {
				name = fmt.Sprintf(`json:{"driver": "raw", "file": {"driver": "blkdebug", "config": %q, "image": {"driver": "file", "filename": %q}}}`, conf, img)
			}
			args := append(append([]string{}, c.cmds...), name)
			var out, errOut string
			var code int
			if j == 0 {
				out, errOut, code = runQemuIO(t, bin, "", args...)
			} else {
				out, errOut, code = ioRun(args, "")
			}
			got[j] = [3]string{normalize(out), errOut, fmt.Sprint(code)}
			if !c.raw {
				if out, err := exec.Command(qemuImg, "check", img).CombinedOutput(); err != nil {
					t.Errorf("tool %d: qemu-img check: %v: %s", j, err, out)
				}
			}
		}
		if got[0] != got[1] {
			t.Errorf("%s %q:\nqemu-io:\n%s%s\nexit %s\nminivmm io:\n%s%s\nexit %s", c.event, c.cmds,
				got[0][0], got[0][1], got[0][2], got[1][0], got[1][1], got[1][2])
		}
	}
}
