package iotool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/internal/fdtest"
	"minivmm/internal/qtool"
)

// timingLine matches qemu-io's statistics line; normalize keeps its
// size and op count and checks the rest has the right shape.
var timingLine = regexp.MustCompile(`(?m)^(\S+(?: \S+)?), (\d+) ops; (?:\d\d\.\d\d sec|\d+:\d\d:\d\d\.\d\d) \([0-9.]+(?:inf)? (?:bytes|KiB|MiB|GiB|TiB|PiB|EiB)/sec and [0-9.]+ ops/sec\)$`)

// machineLine is the same for -C: bytes,ops,time,bytes/sec,ops/sec.
var machineLine = regexp.MustCompile(`(?m)^(\d+),(\d+),\d+:\d\d:\d\d\.\d\d,[0-9.]+,[0-9.]+$`)

func normalize(s string) string {
	s = timingLine.ReplaceAllString(s, "$1, $2 ops; TIME")
	return machineLine.ReplaceAllString(s, "$1,$2,TIME")
}

// testImage makes a file of size bytes, starting with content.
func testImage(t *testing.T, size int64, content []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.raw")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestMain checks, once every test has ended, that none left a
// descriptor open: the parallel tests cannot check their own.
// With ioChildEnv set, the test binary is minivmm io itself (named
// qemu-io), for the commands that end the process (abort, sigraise).
func TestMain(m *testing.M) {
	if os.Getenv(ioChildEnv) == "1" {
		os.Exit(runIO(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(fdtest.Main(m))
}

const ioChildEnv = "MINIVMM_IOTOOL_CHILD"

// runIO runs minivmm io in-process, named as qemu-io so that its
// messages compare with the real one's.
func runIO(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Run(qtool.Program{Name: "qemu-io", Version: "test"}, args, stdin, stdout, stderr)
}

// ioRun runs minivmm io in-process.
func ioRun(args []string, stdin string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = runIO(args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func cmds(cs ...string) []string {
	var args []string
	for _, c := range cs {
		args = append(args, "-c", c)
	}
	return args
}

// directIO tells whether path's file system takes O_DIRECT (tmpfs did
// not before Linux 6.6).
func directIO(path string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// imgArgs is pre, a -c for each command, and the image.
func imgArgs(pre []string, cs ...string) []string {
	return append(append(pre, cmds(cs...)...), "IMG")
}

func subst(args []string, img string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, "IMG", img)
	}
	return out
}

// helpList is qemu-io 7.2's "help".
const helpList = `abort -- simulate a program crash using abort(3)
aio_flush -- completes all outstanding aio requests
aio_read [-Ciqv] [-P pattern] off len [len..] -- asynchronously reads a number of bytes
aio_write [-Cfiquz] [-P pattern] off len [len..] -- asynchronously writes a number of bytes
alloc offset [count] -- checks if offset is allocated in the file
break event tag -- sets a breakpoint on event and tags the stopped request as tag
close -- close the current open file
discard [-Cq] off len -- discards a number of bytes at a specified offset
flush -- flush all in-core file state to disk
help [command] -- help for one or all commands
info -- prints information about the current file
length -- gets the length of the current file
map  -- prints the allocated areas of a file
open [-rsCnkU] [-t cache] [-d discard] [-o options] [path] -- open the file specified by path
quit -- exit the program
read [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset
readv [-Cqv] [-P pattern] off len [len..] -- reads a number of bytes at a specified offset
remove_break tag -- remove a breakpoint by tag
reopen [(-r|-w)] [-c cache] [-o options] -- reopens an image with new options
resume tag -- resumes the request tagged as tag
sigraise signal -- raises a signal
sleep -- waits for the given value in milliseconds
truncate [-m prealloc_mode] off -- truncates the current file at the given offset
wait_break tag -- waits for the suspension of a request
write [-bcCfnquz] [-P pattern | -s source_file] off len -- writes a number of bytes at a specified offset
writev [-Cfq] [-P pattern] off len [len..] -- writes a number of bytes at a specified offset

Use 'help commandname' for extended help.
`

const usageRead = "read [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset\n"
const usageWrite = "write [-bcCfnquz] [-P pattern | -s source_file] off len -- writes a number of bytes at a specified offset\n"

const probeWarning = "WARNING: Image format was not specified for 'IMG' and probing guessed raw.\n" +
	"         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n" +
	"         Specify the 'raw' format explicitly to remove the restrictions.\n"

// ioCases are commands and what qemu-io 7.2 prints for them, on a 1 MiB
// image of zeroes (output observed with QEMU 7.2's qemu-io).
var ioCases = []struct {
	name       string
	args       []string
	stdin      string
	out, err   string
	code       int
	imageAfter func(t *testing.T, data []byte)
	direct     bool // needs O_DIRECT from the file system
}{
	{name: "write and read back", args: imgArgs([]string{"-f", "raw"}, "write -P 0xab 0 64k", "read -P 0xab 0 64k", "read -P 0xab 64k 4k"),
		out: "wrote 65536/65536 bytes at offset 0\n64 KiB, 1 ops; TIME\n" +
			"read 65536/65536 bytes at offset 0\n64 KiB, 1 ops; TIME\n" +
			"Pattern verification failed at offset 65536, 4096 bytes\nread 4096/4096 bytes at offset 65536\n4 KiB, 1 ops; TIME\n",
		code: 1,
		imageAfter: func(t *testing.T, data []byte) {
			if !bytes.Equal(data[:65536], bytes.Repeat([]byte{0xab}, 65536)) || data[65536] != 0 {
				t.Error("image does not hold 64 KiB of 0xab")
			}
		}},
	{name: "default pattern, hexdump, quiet", args: imgArgs([]string{"-f", "raw"}, "write 0 20", "write -P 0x41 20 3", "read -v 0 40", "read -vq 0 1", "read 0 1 -v"),
		out: "wrote 20/20 bytes at offset 0\n20 bytes, 1 ops; TIME\nwrote 3/3 bytes at offset 20\n3 bytes, 1 ops; TIME\n" +
			"00000000:  cd cd cd cd cd cd cd cd cd cd cd cd cd cd cd cd  ................\n" +
			"00000010:  cd cd cd cd 41 41 41 00 00 00 00 00 00 00 00 00  ....AAA.........\n" +
			"00000020:  00 00 00 00 00 00 00 00  ........\n" +
			"read 40/40 bytes at offset 0\n40 bytes, 1 ops; TIME\n" +
			"00000000:  cd  .\nread 1/1 bytes at offset 0\n1 bytes, 1 ops; TIME\n"},
	{name: "pattern ranges", args: imgArgs([]string{"-f", "raw"}, "write -P 7 8 8", "read -P 7 -s 8 -l 8 0 32", "read -P 7 -s 8 0 32", "read -l 3 0 4", "read -P 1 -s 5 0 4", "read -P 0 -C 0 8"),
		out: "wrote 8/8 bytes at offset 8\n8 bytes, 1 ops; TIME\nread 32/32 bytes at offset 0\n32 bytes, 1 ops; TIME\n" +
			"Pattern verification failed at offset 8, 24 bytes\nread 32/32 bytes at offset 0\n32 bytes, 1 ops; TIME\n" +
			usageRead + "pattern verification range exceeds end of read data\n8,1,TIME\n",
		code: 1},
	{name: "numbers", args: imgArgs([]string{"-f", "raw"}, "read 0 x", "read 0 1x", "read 0 -1", "read 0 8E", "read 0 2G", "read 0x10 1.5k", "read 0 1m", "read 1M 1", "read 1M 0", "read 2M 0"),
		out: "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- x\n" +
			"Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- 1x\n" + usageRead +
			"Parsing error: argument too large -- 8E\nlength cannot exceed 2147483136, given 2G\n" +
			"read 1536/1536 bytes at offset 16\n1.500 KiB, 1 ops; TIME\nread 1048576/1048576 bytes at offset 0\n1 MiB, 1 ops; TIME\n" +
			"read failed: Input/output error\nread 0/0 bytes at offset 1048576\n0 bytes, 1 ops; TIME\nread failed: Input/output error\n",
		err: "read: invalid option -- '1'\n", code: 1},
	{name: "bad commands", args: imgArgs([]string{"-f", "raw"}, "foo", "r 0", "length 1", "help 1 2", "r -x 0 1", "help x", "quit 1", "length"),
		out: usageRead + "command x not found\n",
		err: "command \"foo\" not found\nbad argument count 1 to r, expected at least 2 arguments\n" +
			"bad argument count 1 to length, expected 0 arguments\nbad argument count 2 to help, expected between 0 and 1 arguments\n" +
			"r: invalid option -- 'x'\n",
		code: 1},
	{name: "write options", args: imgArgs([]string{"-f", "raw"}, "write -n 0 1", "write -u 0 1", "write -bz 0 1", "write -fc 0 1", "write -zP 1 0 1",
		"write -c 0 1", "write -c 0 512", "write -b 0 512", "write -zu 0 3G", "write -zn 0 3G", "write -P 256 0 1", "write -f -P 0x11 1 2", "write -z -u 1 1", "read -P 0 0 1", "read -P 0x11 2 1", "write 1M 1", "write 1M 0"),
		out: "-n requires -z to be specified\n-u requires -z to be specified\n-b and -z cannot be specified at the same time\n" +
			"-f and -b or -c cannot be specified at the same time\nOnly one of -z, -P, and -s can be specified at the same time\n" +
			"1 is not a sector-aligned value for 'count'\nwrite failed: Operation not supported\nwrite failed: Operation not supported\n" +
			"length cannot exceed 2147483136 without -n, given 3G\nwrite failed: Input/output error\n256 is not a valid pattern byte\n" +
			"wrote 2/2 bytes at offset 1\n2 bytes, 1 ops; TIME\nwrote 1/1 bytes at offset 1\n1 bytes, 1 ops; TIME\n" +
			"read 1/1 bytes at offset 0\n1 bytes, 1 ops; TIME\nread 1/1 bytes at offset 2\n1 bytes, 1 ops; TIME\n" +
			"write failed: Input/output error\nwrote 0/0 bytes at offset 1048576\n0 bytes, 1 ops; TIME\n",
		code: 1},
	{name: "discard, map, info, length, flush", args: imgArgs([]string{"-f", "raw"}, "write -P 1 0 128k", "discard 0 64k", "discard -q 64k 4k", "discard -C 0 512", "read -P 0 0 64k", "discard 1M 1", "map", "info", "length", "flush"),
		out: "wrote 131072/131072 bytes at offset 0\n128 KiB, 1 ops; TIME\ndiscard 65536/65536 bytes at offset 0\n64 KiB, 1 ops; TIME\n512,1,TIME\n" +
			"read 65536/65536 bytes at offset 0\n64 KiB, 1 ops; TIME\ndiscard failed: Input/output error\n" +
			"1 MiB (0x100000) bytes     allocated at offset 0 bytes (0x0)\nformat name: raw\ncluster size: 0 bytes\nvm state offset: 0 bytes\n1 MiB\n",
		code: 1},
	{name: "protocol node alone", args: imgArgs([]string{"-f", "file"}, "info", "map", "length"),
		out: "format name: file\nformat name: file\ncluster size: 0 bytes\nvm state offset: 0 bytes\n1 MiB (0x100000) bytes     allocated at offset 0 bytes (0x0)\n1 MiB\n"},
	{name: "read-only refuses writes", args: imgArgs([]string{"-r", "-f", "raw"}, "write 0 1", "discard 0 1", "write -z 0 1", "read -P 0 0 1", "flush"),
		out:  "read 1/1 bytes at offset 0\n1 bytes, 1 ops; TIME\n",
		err:  "qemu-io: Block node is read-only\nqemu-io: Block node is read-only\nqemu-io: Block node is read-only\n",
		code: 1,
		imageAfter: func(t *testing.T, data []byte) {
			if data[0] != 0 {
				t.Error("-r wrote the image")
			}
		}},
	{name: "pattern mismatch alone fails", args: imgArgs([]string{"-f", "raw"}, "read -P 0xcd 0 4k", "read 0 1"),
		out: "Pattern verification failed at offset 0, 4096 bytes\nread 4096/4096 bytes at offset 0\n4 KiB, 1 ops; TIME\n" +
			"read 1/1 bytes at offset 0\n1 bytes, 1 ops; TIME\n", code: 1},
	{name: "probed raw", args: imgArgs(nil, "write -P 0x51 0 512", "read -P 0x51 0 512"),
		out: "wrote 512/512 bytes at offset 0\n512 bytes, 1 ops; TIME\nread 512/512 bytes at offset 0\n512 bytes, 1 ops; TIME\n",
		err: probeWarning},
	{name: "probed raw, read-only: no warning", args: imgArgs([]string{"-r"}, "read 0 1"),
		out: "read 1/1 bytes at offset 0\n1 bytes, 1 ops; TIME\n"},
	{name: "image-opts", args: []string{"--image-opts", "-c", "write -P 3 0 1", "-c", "info", "driver=raw,file.driver=file,file.filename=IMG,cache.direct=on"},
		out: "wrote 1/1 bytes at offset 0\n1 bytes, 1 ops; TIME\nformat name: raw\ncluster size: 0 bytes\nvm state offset: 0 bytes\n"},
	{name: "image-opts read-only node", args: []string{"--image-opts", "-c", "read 0 1", "driver=raw,file.driver=file,file.filename=IMG,read-only=on"},
		err: "qemu-io: can't open: Block node is read-only\n", code: 1},
	{name: "image-opts -r over read-only=off writes", args: []string{"-r", "--image-opts", "-c", "write 0 1", "driver=raw,file.driver=file,file.filename=IMG,read-only=off"},
		out: "wrote 1/1 bytes at offset 0\n1 bytes, 1 ops; TIME\n"},
	{name: "image-opts and -f", args: []string{"--image-opts", "-f", "raw", "driver=raw"},
		err: "qemu-io: --image-opts and -f are mutually exclusive\n", code: 1},
	{name: "no such file", args: []string{"-f", "raw", "-c", "read 0 1", "IMG.missing"},
		err: "qemu-io: can't open device IMG.missing: Could not open 'IMG.missing': No such file or directory\n", code: 1},
	{name: "unknown format", args: []string{"-f", "bogus", "IMG"},
		err: "qemu-io: can't open device IMG: Unknown driver 'bogus'\n", code: 1},
	{name: "cache modes", args: []string{"-t", "bogus", "IMG"}, err: "qemu-io: Invalid cache option: bogus\n", code: 1},
	{name: "direct io, unaligned", args: imgArgs([]string{"-n", "-f", "raw"}, "write -P 9 1 3", "read -v 0 5"), direct: true,
		out: "wrote 3/3 bytes at offset 1\n3 bytes, 1 ops; TIME\n00000000:  00 09 09 09 00  .....\nread 5/5 bytes at offset 0\n5 bytes, 1 ops; TIME\n"},
	{name: "no file", args: cmds("read 0 1", "help help", "quit", "length"),
		out: "help [command] -- help for one or all commands\n", err: "no file open, try 'help open'\n", code: 1},
	{name: "help", args: cmds("help", "help r", "? q"),
		out: helpList + "r [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset\n" + readHelp +
			"q -- exit the program\n"},
	{name: "options", args: []string{"-rnc", "length", "IMG", "--cmd=length", "--form=raw", "--cache", "writeback"},
		out: "1 MiB\n1 MiB\n"},
	{name: "bad options", args: []string{"--c", "IMG"}, out: ioUsage,
		err: "qemu-io: option '--c' is ambiguous; possibilities: '--cmd' '--copy-on-read' '--cache'\n", code: 1},
	{name: "missing argument", args: []string{"-f", "raw", "IMG", "-c"}, out: ioUsage,
		err: "qemu-io: option requires an argument -- 'c'\n", code: 1},
	{name: "two files", args: []string{"IMG", "IMG"}, out: ioUsage, code: 1},
	{name: "stdin", args: []string{"-f", "raw", "IMG"}, stdin: "write -P 5 0 1\n\n  read   -P 5  0  1 \nfoo\nquit\nlength\n",
		out: "qemu-io> wrote 1/1 bytes at offset 0\n1 bytes, 1 ops; TIME\nqemu-io> qemu-io> read 1/1 bytes at offset 0\n1 bytes, 1 ops; TIME\nqemu-io> qemu-io> ",
		err: "command \"foo\" not found\n", code: 1},
	{name: "stdin without final newline", args: []string{"-f", "raw", "IMG"}, stdin: "length",
		out: "qemu-io> 1 MiB\nqemu-io> "},
	{name: "stdin, long line split as fgets splits it", args: []string{"-f", "raw", "IMG"}, stdin: "length" + strings.Repeat(" ", 1017) + "length\n",
		out: "qemu-io> 1 MiB\nqemu-io> 1 MiB\nqemu-io> "},
}

func TestIOCommands(t *testing.T) {
	t.Parallel()
	for _, tc := range ioCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			img := testImage(t, 1<<20, nil)
			if tc.direct && !directIO(img) {
				t.Skip("the file system of the test's temporary directory has no O_DIRECT")
			}
			out, errOut, code := ioRun(subst(tc.args, img), tc.stdin)
			out = normalize(strings.ReplaceAll(out, img, "IMG"))
			errOut = strings.ReplaceAll(errOut, img, "IMG")
			if out != tc.out {
				t.Errorf("stdout:\n%s\nwant:\n%s", out, tc.out)
			}
			if errOut != tc.err {
				t.Errorf("stderr:\n%s\nwant:\n%s", errOut, tc.err)
			}
			if code != tc.code {
				t.Errorf("exit status %d, want %d", code, tc.code)
			}
			if tc.imageAfter != nil {
				data, err := os.ReadFile(img)
				if err != nil {
					t.Fatal(err)
				}
				tc.imageAfter(t, data)
			}
		})
	}
}

func TestIOFormatting(t *testing.T) {
	t.Parallel()
	for v, want := range map[float64]string{
		0: "0 bytes", 40: "40 bytes", 725.967043: "725.967043 bytes", 811.0005: "811 bytes", 1023.9999999: "1024 bytes",
		1024: "1 KiB", 1536: "1.500 KiB", 30.815 * (1 << 20): "30.815 MiB", 1 << 40: "1 TiB", 3 << 60: "3 EiB",
		1.0004 * (1 << 20): "1 MiB", 1000 * (1 << 10): "1000 KiB", math.Inf(1): "inf EiB",
	} {
		if got := cvtstr(v); got != want {
			t.Errorf("cvtstr(%v) = %q, want %q", v, got, want)
		}
	}
	for d, want := range map[time.Duration]string{
		0: "00.00 sec", 3456 * time.Microsecond: "00.00 sec", 996 * time.Millisecond: "01.00 sec",
		1510 * time.Millisecond: "0:00:01.51", 61500 * time.Millisecond: "0:01:01.50", 3*time.Hour + 2*time.Minute + 5*time.Second: "3:02:05.00",
	} {
		if got := timestr(d, false); got != want {
			t.Errorf("timestr(%v) = %q, want %q", d, got, want)
		}
	}
	if got := timestr(10*time.Millisecond, true); got != "0:00:00.01" {
		t.Errorf("verbose timestr = %q", got)
	}
	for s, want := range map[string]string{
		"0": "0", "1k": "1024", "1.5K": "1536", "0x10": "16", "1b": "1", "2T": "2199023255552", "7E": "8070450532247928832",
		"8E": "Parsing error: argument too large -- 8E", "9223372036854775808": "Parsing error: argument too large -- 9223372036854775808",
		"-1": "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- -1",
		"1x": "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- 1x",
	} {
		n, err := cvtnum(s)
		got := strconv.FormatInt(n, 10)
		if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("cvtnum(%q) = %s, want %s", s, got, want)
		}
	}
	tool := &ioTool{out: qtool.NewStdout(&bytes.Buffer{}), stderr: &bytes.Buffer{}}
	for s, want := range map[string]int{"0": 0, "255": 255, "0xff": 255, "0XfF": 255, "010": 8, "-0": 0, "+5": 5, " 7": 7,
		"256": -1, "-1": -1, "x": -1, "0x": -1, "08": -1, "1 ": -1, "0x100": -1} {
		b, ok := tool.parsePattern(s)
		got := int(b)
		if !ok {
			got = -1
		}
		if got != want {
			t.Errorf("parsePattern(%q) = %d, want %d", s, got, want)
		}
	}
}

// TestIOStatistics checks the figures of the statistics line: computed
// from the real elapsed time, consistent with each other.
func TestIOStatistics(t *testing.T) {
	t.Parallel()
	img := testImage(t, 4<<20, nil)
	out, _, code := ioRun([]string{"-f", "raw", "-c", "read -C 0 4M", img}, "")
	f := strings.Split(strings.TrimSpace(out), ",")
	if code != 0 || len(f) != 5 || f[0] != "4194304" || f[1] != "1" {
		t.Fatalf("read -C printed %q (exit %d)", out, code)
	}
	bps, _ := strconv.ParseFloat(f[3], 64)
	ops, _ := strconv.ParseFloat(f[4], 64)
	if bps <= 0 || ops <= 0 || math.Abs(bps/ops-4194304) > 4194304*0.01 {
		t.Errorf("bytes/sec %v and ops/sec %v do not agree", bps, ops)
	}
}

// TestIOProbedRawGuard: an image whose format was probed as raw must not
// be written into another format's header, or the next open would probe
// it as that format.
func TestIOProbedRawGuard(t *testing.T) {
	t.Parallel()
	registerProbeFormat()
	img := testImage(t, 1<<20, nil)
	if err := os.WriteFile(img+".hdr", []byte("IOTESTFMT"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, code := ioRun([]string{"-c", "write -s " + img + ".hdr 0 9", "-c", "write -P 0x49 0 1", "-c", "write -s " + img + ".hdr 512 9", img}, "")
	want := "write failed: Operation not permitted\nwrote 1/1 bytes at offset 0\n1 bytes, 1 ops; TIME\nwrote 9/9 bytes at offset 512\n9 bytes, 1 ops; TIME\n"
	if got := normalize(out); got != want || code != 1 {
		t.Errorf("got %q (exit %d), want %q", got, code, want)
	}
	// With the format given there is nothing to guard.
	out, _, code = ioRun([]string{"-f", "raw", "-c", "write -s " + img + ".hdr 0 9", img}, "")
	if code != 0 {
		t.Errorf("with -f raw: %q (exit %d)", out, code)
	}
	// The image now probes as that format, and is taken for it,
	// read-only or not, as qemu-io takes it (it fails to open here for
	// want of a real driver, which shows what the guard was for).
	for _, args := range [][]string{{"-r", "-c", "read 0 1", img}, {"-c", "read 0 1", img}} {
		_, errOut, code := ioRun(args, "")
		if want := "qemu-io: can't open device IMG: iotest format cannot be opened\n"; code != 1 || strings.ReplaceAll(errOut, img, "IMG") != want {
			t.Errorf("probing the written image (%q): %q (exit %d), want %q", args, errOut, code, want)
		}
	}
}

var probeFormatOnce sync.Once

// registerProbeFormat adds a format that claims images starting with
// "IOTESTFMT" and cannot be opened.
func registerProbeFormat() {
	probeFormatOnce.Do(func() {
		block.Register(&block.Driver{
			Name: "iotestfmt", Format: true,
			Probe: func(header []byte, _ string) int {
				if bytes.HasPrefix(header, []byte("IOTESTFMT")) {
					return 100
				}
				return 0
			},
			Open: func(*block.OpenContext) (block.Image, error) {
				return nil, errors.New("iotest format cannot be opened")
			},
		})
	})
}

// rawFd opens path without O_CLOEXEC, as a management layer passes it.
func rawFd(t *testing.T, path string, flags int) int {
	t.Helper()
	fd, err := unix.Open(path, flags, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestIOAddFdInProcess checks that -add-fd takes the fds (the originals
// are closed) and that nothing is left open after the run.
func TestIOAddFdInProcess(t *testing.T) {
	fdtest.Check(t)
	img := testImage(t, 1<<20, nil)
	rw := rawFd(t, img, unix.O_RDWR)
	ro := rawFd(t, img, unix.O_RDONLY)
	out, errOut, code := ioRun([]string{"-f", "raw",
		"-add-fd", fmt.Sprintf("fd=%d,set=7,opaque=rdwr", rw), "--add-fd=fd=" + strconv.Itoa(ro) + ",set=7",
		"-c", "write -P 0x77 4k 4k", "-c", "read -P 0x77 4k 4k", "/dev/fdset/7"}, "")
	if code != 0 || errOut != "" || !strings.Contains(out, "read 4096/4096 bytes at offset 4096") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, fd := range []int{rw, ro} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
			t.Errorf("fd %d still open after minivmm io", fd)
		}
	}
}

// qemuIO finds the real qemu-io, skipping the test without it (failing
// it under CI=true).
func qemuIO(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("qemu-io")
	if err != nil {
		msg := "qemu-io not installed; apt-get install qemu-utils"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

func runQemuIO(t *testing.T, bin string, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Args[0] = "qemu-io" // getopt's messages name argv[0]
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &out, &errb, strings.NewReader(stdin)
	err := cmd.Run()
	return out.String(), errb.String(), exitCode(t, cmd, err)
}

// exitCode is a process's exit status as a shell shows it: 128+signal
// when a signal ended it.
func exitCode(t *testing.T, cmd *exec.Cmd, err error) int {
	t.Helper()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

// TestIOInteropQemu: what minivmm io writes, qemu-io reads back, and the
// reverse, with every cache mode on minivmm's side.
func TestIOInteropQemu(t *testing.T) {
	t.Parallel()
	bin := qemuIO(t)
	img := testImage(t, 2<<20, nil)
	for i, mode := range []string{"writeback", "writethrough", "none", "directsync", "unsafe"} {
		if (mode == "none" || mode == "directsync") && !directIO(img) {
			t.Logf("-t %s not tried: the file system of %s has no O_DIRECT", mode, img)
			continue
		}
		p := fmt.Sprintf("0x%02x", 0x10+i)
		off := fmt.Sprint(i*65536 + 3) // unaligned, for O_DIRECT's sake
		out, errOut, code := ioRun([]string{"-f", "raw", "-t", mode, "-c", "write -P " + p + " " + off + " 5000", "-c", "flush", img}, "")
		if code != 0 {
			t.Fatalf("minivmm io -t %s: exit %d: %s%s", mode, code, out, errOut)
		}
		out, errOut, code = runQemuIO(t, bin, "", "-r", "-f", "raw", "-c", "read -P "+p+" "+off+" 5000", "-c", "read -P 0 "+fmt.Sprint(i*65536)+" 3", img)
		if code != 0 || errOut != "" || strings.Contains(out, "failed") {
			t.Errorf("qemu-io reading what minivmm io -t %s wrote: exit %d: %s%s", mode, code, out, errOut)
		}
	}
	// A wrong pattern makes qemu-io fail: the check above checks.
	if _, _, code := runQemuIO(t, bin, "", "-r", "-f", "raw", "-c", "read -P 0x99 3 5000", img); code != 1 {
		t.Errorf("qemu-io read -P of a wrong pattern: exit %d, want 1", code)
	}

	// The reverse: qemu-io writes, discards; minivmm io reads.
	out, errOut, code := runQemuIO(t, bin, "", "-f", "raw", "-c", "write -P 0xe1 1M 128k", "-c", "write -z 1M 4k", "-c", "discard 1052672 4096", img)
	if code != 0 {
		t.Fatalf("qemu-io write: exit %d: %s%s", code, out, errOut)
	}
	for _, mode := range []string{"writeback", "none"} {
		if mode == "none" && !directIO(img) {
			continue
		}
		out, errOut, code = ioRun([]string{"-r", "-f", "raw", "-t", mode, "-c", "read -P 0 1M 8k", "-c", "read -P 0xe1 1056768 120k", img}, "")
		if code != 0 || errOut != "" || strings.Contains(out, "failed") {
			t.Errorf("minivmm io -t %s reading what qemu-io wrote: exit %d: %s%s", mode, code, out, errOut)
		}
	}
	if _, _, code := ioRun([]string{"-r", "-f", "raw", "-c", "read -P 0xe1 1M 4k", img}, ""); code != 1 {
		t.Errorf("minivmm io read -P of a wrong pattern: exit %d, want 1", code)
	}
}

// TestIOConformance runs the same command lines through qemu-io and
// minivmm io, each on its own copy of the same image, and compares what
// they print (timing figures aside) and their exit status.
func TestIOConformance(t *testing.T) {
	t.Parallel()
	bin := qemuIO(t)
	content := []byte("minivmm io conformance 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ !@#$%^&*()")
	type tc struct {
		args  []string
		stdin string
	}
	var cases []tc
	for _, c := range ioCases {
		if strings.Contains(c.name, "options") || c.name == "missing argument" || c.name == "two files" {
			continue // the usage text names minivmm io and its -add-fd
		}
		cases = append(cases, tc{c.args, c.stdin})
	}
	cases = append(cases,
		tc{args: imgArgs([]string{"-f", "raw"}, "read -v 0 80", "read -P0x6d -v 0 1", "help read", "help write", "help discard", "help flush", "help map", "help info", "help length", "help quit", "help ?")},
		tc{args: imgArgs([]string{"-f", "raw"}, "read -P x 0 1", "read -P -1 0 1", "read -P", "read -b 1 512", "read -b 0 512", "write -s IMG.src 0 3", "write -s IMG.src 0 100", "read -v 0 100", "write -s IMG.none 0 1", "write -s IMG.empty 0 1", "discard 0 3G", "discard -x 0 1", "discard 0", "map 1", "flush 1", "info 1")},
		tc{args: imgArgs([]string{"-t", "unsafe", "-d", "ignore", "-f", "raw"}, "write 0 1", "discard 0 512", "read -P 0xcd 0 1", "flush")},
		tc{args: imgArgs([]string{"-t", "directsync", "-f", "raw"}, "write 5 1", "write -z 0 512", "read -P 0 0 512")},
		tc{args: []string{"--image-opts", "-c", "read 0 1", "driver=raw,file.driver=file,file.filename=IMG.missing"}},
		tc{args: []string{"--image-opts", "-c", "read 0 1", "file.driver=file,file.filename=IMG"}},
		tc{args: []string{"--image-opts", "-c", "read 0 1", "driver=bogus,file.driver=file,file.filename=IMG"}},
		tc{args: []string{"-U", "-c", "length", "IMG"}},
		tc{args: []string{"-U", "-r", "-c", "length", "IMG"}},
		tc{args: []string{"-f", "raw", "-c", "read 0 1", "/"}},
		tc{args: []string{"-d", "bogus", "IMG"}},
		tc{args: []string{"--bogus=1"}},
		tc{args: []string{"--read-only=1"}},
		tc{args: []string{"--cmd"}},
		tc{args: []string{"-f", "raw", "IMG"}, stdin: ""},
		tc{args: []string{"-f", "raw", "IMG"}, stdin: "read 0 1\nquit\nread 0 1\n"},
	)
	for i, c := range cases {
		var got [2][3]string
		for j, tool := range []string{"qemu-io", "minivmm"} {
			img := testImage(t, 1<<20, content)
			os.WriteFile(img+".src", []byte("hello\n"), 0o600)
			os.WriteFile(img+".empty", nil, 0o600)
			args := subst(c.args, img)
			var out, errOut string
			var code int
			if tool == "qemu-io" {
				out, errOut, code = runQemuIO(t, bin, c.stdin, args...)
			} else {
				out, errOut, code = ioRun(args, c.stdin)
			}
			if tool == "qemu-io" && strings.HasPrefix(out, "Usage: qemu-io") {
				out = ioUsage
			}
			got[j] = [3]string{normalize(strings.ReplaceAll(out, img, "IMG")), strings.ReplaceAll(errOut, img, "IMG"), strconv.Itoa(code)}
		}
		if got[0] != got[1] {
			t.Errorf("case %d %q stdin %q:\nqemu-io:\n%s\n%s\nexit %s\nminivmm io:\n%s\n%s\nexit %s", i, c.args, c.stdin,
				got[0][0], got[0][1], got[0][2], got[1][0], got[1][1], got[1][2])
		}
	}
}

// FuzzIOCommand runs arbitrary command lines through minivmm io against
// a null-co image: whatever the line, an answer and no panic.
func FuzzIOCommand(f *testing.F) {
	for _, s := range []string{
		"read -P 0xab 0 4k", "write -z 1M 64k", "read -v 0 32", "map", "discard 0 1G",
		"write -P 300 0 1", "read 9999999999999999999 1", "help read", "write -q -P 1 -1 2", `read "0 1`,
		"aio_write -P 1 0 64k 4k", "readv 0 512 512", "alloc 0 1M", "truncate 2M", "reopen -r", "write -c 0 64k", "info",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if argv := breakline(line); len(argv) > 0 {
			switch argv[0] {
			case "abort", "sigraise", "sleep":
				return // they end or stall the process, by design
			}
		}
		var out, errOut strings.Builder
		runIO([]string{"--image-opts", "-c", line, "driver=null-co,size=1M,read-zeroes=on"}, strings.NewReader(""), &out, &errOut)
	})
}
