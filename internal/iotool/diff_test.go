package iotool

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// diffCase is a command line run by qemu-io and by minivmm io, each on
// its own copy of a new image (IMG in args; OTHER names a second, raw
// one beside it).
type diffCase struct {
	fmt, size string
	args      []string
	child     bool // run minivmm io as a process of its own (it kills itself)
	// unaligned: the image's first cluster (written) gets an L2 entry
	// pointing 512 bytes into its host cluster, corruption found on
	// reads; the images left are compared byte for byte.
	unaligned bool
	// bytewise: the images left must be equal byte for byte, and both
	// pass qemu-img check with the same report (what qemu-img compare
	// cannot see, the VM state area, is covered so).
	bytewise bool
}

// diffCases cover the commands and options qemu-io scripts use, errors
// included. Asynchronous requests are each followed by aio_flush where
// two could complete in either order (both tools print in completion
// order).
var diffCases = []diffCase{
	{fmt: "qcow2", args: cmds("writev -P 5 512 1k 1k", "readv -P 5 512 2k", "readv -v 512 16 16", "readv -P 6 512 2k")},
	{fmt: "qcow2", args: cmds("writev 0 3G", "readv 0 1G 1G 1G", "readv 2M 512", "readv -C 0 512", "readv 0 -5", "readv -q 0 1", "writev -f -q 0 1", "readv 0", "readv -x 0 1")},
	{fmt: "qcow2", args: cmds("write 0 64k", "alloc 0", "alloc 0 128k", "alloc 64k 128k", "alloc 1M", "alloc 2M", "alloc x", "alloc 0 x", "alloc 0 0", "alloc 1 1", "alloc 0 2M", "alloc 0 1 2")},
	{fmt: "qcow2", args: cmds("truncate 2M", "length", "truncate -m bogus 3M", "truncate x", "truncate 512k", "length", "truncate 1M", "truncate 1", "truncate")},
	{fmt: "raw", args: cmds("write -P 9 0 1", "truncate 2M", "length", "read -P 0 1M 1M", "truncate 512k", "length", "truncate 1", "length")},
	{fmt: "qcow2", args: cmds("sleep 10", "sleep x", "sleep -1", "sleep 1k", "sleep 0x10", "sleep", "sigraise 66", "sigraise 0", "sigraise x")},
	{fmt: "qcow2", args: cmds("write 0 1", "sigraise 15", "read 0 1"), child: true},
	{fmt: "qcow2", args: cmds("write -P 3 0 1", "abort", "read 0 1"), child: true},
	{fmt: "qcow2", args: cmds("aio_write -P 1 0 64k", "aio_flush", "aio_write -P 2 64k 64k 1k", "aio_flush", "aio_read -P 1 0 64k", "aio_flush",
		"aio_read -P 9 0 512", "aio_flush", "aio_read 2M 512", "aio_flush", "aio_write 2M 512", "aio_flush", "aio_read -v 0 16")},
	{fmt: "qcow2", args: cmds("aio_read -i 0 16", "aio_write -C 0 512", "aio_flush", "aio_read -q 0 1", "aio_write -z -u 64k 64k", "aio_flush", "aio_write -f -P 7 0 1")},
	{fmt: "qcow2", args: cmds("aio_read 0 x", "aio_read -P 300 0 1", "aio_write -u 0 1", "aio_write -i 0 1", "aio_read 0", "aio_read x 1",
		"aio_write 0 3G", "aio_write -z 0 3G", "aio_flush", "aio_write -z 0 1 1", "aio_read -x 0 1")},
	{fmt: "qcow2", args: []string{"-r", "-c", "aio_write 0 1", "-c", "writev 0 1", "-c", "truncate 0"}},
	{fmt: "qcow2", args: cmds("write -c -P 1 0 64k", "write -c 64k 128k", "write -c -P 2 0 64k", "write -c 1k 512", "write -c 192k 512",
		"write -c 3 512", "read -P 1 0 64k", "write -c -f 0 64k")},
	{fmt: "qcow2", size: "1000k", args: cmds("write -c 960k 40k", "write -c 896k 64k", "write -c 832k 104k", "read -P 0xcd 832k 168k")},
	{fmt: "raw", args: []string{"-f", "raw", "-c", "write -c 0 64k"}},
	{fmt: "qcow2", args: cmds("info", "write -f -P 4 0 4k", "write -z -u 4k 4k", "discard -q 0 64k", "discard -C 64k 64k", "map")},
	{fmt: "qcow2", args: cmds("open IMG", "length", "close", "length", "close", "open -r -o driver=raw OTHER", "write 0 1", "open OTHER", "info"), child: false},
	{fmt: "qcow2", args: cmds("open", "open -x IMG", "open -o bogus=1 IMG", "open nonexist", "open -t bad IMG", "open -d bad IMG", "open -i bad IMG", "open -o driver=qcow2")},
	{fmt: "qcow2", args: cmds("open -o driver=qcow2,file.filename=IMG", "length", "open IMG OTHER", "close", "open -n -t writeback -d unmap -U IMG", "write 0 1", "close", "open -s IMG", "write 0 1")},
	{fmt: "qcow2", args: cmds("open null-co://", "length", "close", `open json:{"driver":"raw","file":{"driver":"file","filename":"OTHER"}}`, "length", "close", "open file:OTHER", "length")},
	{fmt: "qcow2", args: []string{`json:{"driver":"qcow2","file.filename":"IMG"}`, "-c", "write -P 8 0 1", "-c", "open -o file.bogus=1 IMG"}},
	{fmt: "qcow2", args: []string{"IMG", "-c", "reopen -r", "-c", "write 0 1", "-c", "reopen -w", "-c", "write 0 1", "-c", "reopen -c none", "-c", "reopen -c bad",
		"-c", "reopen -o bogus=1", "-c", "reopen -r -w", "-c", "reopen x", "-c", "reopen -o cache.direct=on -c none", "-c", "reopen -o read-only=on -r"}},
	{fmt: "qcow2", args: []string{"-r", "IMG", "-c", "reopen -w", "-c", "write -P 6 0 1", "-c", "close", "-c", "reopen -r"}},
	{fmt: "raw", args: []string{"IMG", "-c", "reopen -r", "-c", "write 512 1", "-c", "reopen -w", "-c", "write 512 1", "-c", "reopen -c unsafe",
		"-c", "write -P 3 4k 4k", "-c", "reopen -c writethrough", "-c", "read -P 3 4k 4k", "-c", "write -P 0x51 0 4"}},
	{fmt: "qcow2", args: []string{"-s", "IMG", "-c", "write 0 1", "-c", "read -P 0xcd 0 1", "-c", "map"}},
	{fmt: "qcow2", args: []string{"-C", "IMG", "-c", "read 0 1", "-c", "read 200k 1", "-c", "map", "-c", "readv 300k 512"}},
	{fmt: "qcow2", args: []string{"-r", "-C", "-c", "read 0 1", "IMG"}},
	{fmt: "qcow2", args: []string{"-i", "threads", "-m", "-k", "-n", "--object", "secret,id=s0,data=x", "-c", "write 0 1", "IMG"}},
	{fmt: "qcow2", args: []string{"-i", "native", "-c", "write 0 1", "IMG"}},
	{fmt: "qcow2", args: []string{"-i", "io_uring", "-c", "write 0 1", "IMG"}},
	{fmt: "qcow2", args: []string{"-i", "bogus", "-c", "write 0 1", "IMG"}},
	// The kernel engines (Linux AIO needs O_DIRECT: -n or -t none), with
	// aligned and unaligned, vectored, FUA and concurrent requests.
	{fmt: "raw", args: aioScript("-i", "native", "-n")},
	{fmt: "qcow2", args: aioScript("-k", "-t", "none")},
	{fmt: "raw", args: aioScript("-i", "io_uring")},
	{fmt: "qcow2", args: aioScript("-i", "io_uring", "-n")},
	{fmt: "raw", args: []string{"-k", "-c", "read 0 1", "IMG"}},
	{fmt: "raw", args: []string{"-n", "IMG", "-c", "close", "-c", "open -i native -n IMG", "-c", "write -P 7 0 4k", "-c", "close", "-c", "open -k IMG", "-c", "open -i io_uring IMG", "-c", "read -P 7 0 4k"}},
	{fmt: "qcow2", args: []string{"--object", "secret,data=x", "-c", "write 0 1", "IMG"}},
	{fmt: "qcow2", args: []string{"--object", "iothread,id=x", "-c", "write 0 1", "IMG"}},
	{fmt: "qcow2", args: []string{"-c", "help", "-c", "help aio_read", "-c", "help aio_write", "-c", "help readv", "-c", "help writev", "-c", "help open",
		"-c", "help reopen", "-c", "help sigraise", "-c", "help alloc", "-c", "help truncate", "-c", "help sleep", "-c", "help abort", "-c", "help aio_discard", "IMG"}},
	{fmt: "qcow2", args: cmds("break read_aio a", "remove_break a", "resume a")},
	{fmt: "qcow2", args: cmds("open -r", "open -o driver=raw", `open ""`)},
	{fmt: "qcow2", args: []string{"--image-opts", "-c", "open driver=qcow2,file.filename=IMG", "-c", "length", "-c", "close",
		"-c", "open -o driver=raw IMG", "-c", "open file.filename=IMG", "-c", "info"}},
	{fmt: "qcow2", unaligned: true, args: cmds("read 0 4k", "read 0 4k", "write 0 4k", "discard 0 64k", "alloc 0 4k", "read 64k 4k", "flush")},
	{fmt: "qcow2", unaligned: true, args: cmds("read 64k 4k", "write -P 1 64k 4k", "write -z 64k 4k", "read 0 512", "write -P 2 128k 4k")},
	{fmt: "qcow2", unaligned: true, args: []string{"-r", "-c", "read 0 4k", "-c", "read 0 4k", "-c", "read -P 0 64k 4k", "-c", "alloc 0 4k", "IMG"}},
	// The VM state area: past the disk, L1 grown to cover it, not
	// guest-visible; -b on formats without one; errors.
	{fmt: "qcow2", bytewise: true, args: cmds("write -b -P 0xab 0 64k", "write -b -P 0x11 3M 1536", "write -b -P 0xcc 512 512", "read -b -P 0xab 0 512",
		"read -b -P 0xcc 512 512", "read -b -v 1k 32", "read -b -P 0 64k 512", "read -P 0 0 1M", "info", "map", "length", "write -b 1 512", "write -b 0 1",
		"read -b 0 511", "write -b -z 0 512", "write -b -f 0 512", "write -b -c -P 0x22 64k 512", "write -b 0 0", "read -b 3P 512", "write -b 3P 512",
		"close", "open IMG", "read -b -P 0x11 3M 1536", "read -b -P 0x22 64k 512", "read -b -P 0xab 1k 63k")},
	{fmt: "qcow2", size: "1G", bytewise: true, args: cmds("write -P 1 0 64k", "write -b -P 2 0 1M", "write -b -P 3 1023M 64k", "read -b -P 2 0 1M", "read -P 1 0 64k", "map")},
	{fmt: "qcow2", bytewise: true, args: []string{"-r", "-c", "write -b 0 512", "-c", "read -b -P 0 0 512", "IMG"}},
	{fmt: "raw", args: cmds("write -b 0 512", "read -b 0 512", "info")},
	{fmt: "qcow2", args: []string{"-t", "writeback", "-c", "aio_write -q -P 1 0 64k", "-c", "aio_write -q -P 2 128k 64k", "-c", "aio_flush", "-c", "map", "-c", "read -P 2 128k 64k", "IMG"}},
}

// aioScript is a run of requests through the aio mode options opts give.
func aioScript(opts ...string) []string {
	return imgArgs(opts, "write -P 1 0 64k", "writev -P 2 64k 4k 4k", "aio_write -P 3 128k 64k", "aio_flush", "aio_write -P 4 256k 4k", "aio_flush",
		"read -P 3 128k 64k", "readv -P 2 64k 8k", "write -P 5 1000 3000", "read -P 5 1000 3000", "flush", "write -f -P 6 4k 4k",
		"read -v 0 16", "aio_read -P 4 256k 4k", "aio_flush", "discard 512k 64k", "read -P 0 900k 100k", "map")
}

// TestIODifferential runs diffCases through both tools and compares
// what they print (timings aside), their exit status and the images
// they leave (qemu-img compare).
func TestIODifferential(t *testing.T) {
	t.Parallel()
	bin := qemuIO(t)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed")
	}
	for i, c := range diffCases {
		var got [2][3]string
		var imgs [2]string
		for j := range imgs {
			dir := t.TempDir()
			img, other := filepath.Join(dir, "t.img"), filepath.Join(dir, "o.raw")
			size := c.size
			if size == "" {
				size = "1M"
			}
			if out, err := exec.Command(qemuImg, "create", "-q", "-f", c.fmt, img, size).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create: %v: %s", err, out)
			}
			if err := os.WriteFile(other, make([]byte, 1<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			if c.unaligned {
				unalignFirstCluster(t, bin, img)
			}
			args := make([]string, len(c.args))
			named := false
			for k, a := range c.args {
				named = named || strings.Contains(a, "IMG")
				args[k] = strings.ReplaceAll(strings.ReplaceAll(a, "IMG", img), "OTHER", other)
			}
			if !named {
				// A case that names no image runs on the new one: without
				// it both tools would only say "no file open".
				args = append(args, img)
			}
			var out, errOut string
			var code int
			switch {
			case j == 0:
				out, errOut, code = runQemuIO(t, bin, "", args...)
			case c.child:
				out, errOut, code = runIOChild(t, args)
			default:
				out, errOut, code = ioRun(args, "")
			}
			r := strings.NewReplacer(img, "IMG", other, "OTHER")
			got[j] = [3]string{normalize(r.Replace(out)), r.Replace(errOut), strconv.Itoa(code)}
			imgs[j] = img
		}
		if got[0] != got[1] {
			t.Errorf("case %d %q:\nqemu-io:\n%s\n%s\nexit %q\nminivmm io:\n%s\n%s\nexit %q", i, c.args,
				got[0][0], got[0][1], got[0][2], got[1][0], got[1][1], got[1][2])
		}
		if c.bytewise {
			var checks [2]string
			for j, img := range imgs {
				out, err := exec.Command(qemuImg, "check", img).CombinedOutput()
				if err != nil {
					t.Errorf("case %d %q: qemu-img check of image %d: %v: %s", i, c.args, j, err, out)
				}
				checks[j] = string(out)
			}
			if checks[0] != checks[1] {
				t.Errorf("case %d %q: qemu-img check differs:\n%s\n%s", i, c.args, checks[0], checks[1])
			}
		}
		if c.unaligned || c.bytewise {
			a, _ := os.ReadFile(imgs[0])
			b, _ := os.ReadFile(imgs[1])
			if !bytes.Equal(a, b) {
				t.Errorf("case %d %q: image bytes differ", i, c.args)
			}
		} else if out, err := exec.Command(qemuImg, "compare", "-U", imgs[0], imgs[1]).CombinedOutput(); err != nil {
			t.Errorf("case %d %q: images differ: %v: %s", i, c.args, err, out)
		}
	}
}

// runIOChild runs minivmm io in a process of its own (the test binary,
// see TestMain): its exit status is 128+signal when a signal ended it,
// as a shell reports it.
func runIOChild(t *testing.T, args []string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), ioChildEnv+"=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), exitCode(t, cmd, err)
}

// unalignFirstCluster writes the image's first cluster, then points its
// L2 entry 512 bytes into its host cluster: corruption QEMU finds when
// a request maps that cluster.
func unalignFirstCluster(t *testing.T, qemuIO, img string) {
	t.Helper()
	if out, err := exec.Command(qemuIO, "-c", "write -P 7 0 64k", img).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v: %s", err, out)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u64 := func(off int64) uint64 {
		var b [8]byte
		if _, err := f.ReadAt(b[:], off); err != nil {
			t.Fatal(err)
		}
		return binary.BigEndian.Uint64(b[:])
	}
	l2 := int64(u64(int64(u64(40))) & 0x00fffffffffffe00)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], u64(l2)+512)
	if _, err := f.WriteAt(b[:], l2); err != nil {
		t.Fatal(err)
	}
}
