// Package qemuiotests runs QEMU's own block-layer test suite (the bash tests
// of QEMU 7.2's tests/qemu-iotests) with minivmm in the place of qemu-img
// and qemu-io: the scripts were written for the real tools, and each pinned
// test must print exactly what its reference output says.
//
// The suite comes from Debian's qemu source package (.ci/qemu-iotests puts it
// in /var/cache/minivmm/qemu-iotests and CI exports its directory as
// $MINIVMM_QEMU_IOTESTS). QEMU's check script runs the tests; qemu-system,
// qemu-nbd and qemu-storage-daemon stay QEMU's own.
package qemuiotests

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
)

// Tests that pass with minivmm, per image format. A test leaves these lists
// only with a reason in the README; one that starts passing joins them.
var pinned = map[string][]string{
	"qcow2": qcow2Tests,
	"raw":   rawTests,
}

// defaultDir is where .ci/qemu-iotests puts the suite.
const defaultDir = "/var/cache/minivmm/qemu-iotests/tests/qemu-iotests"

// need returns the suite's directory and the paths of the QEMU programs check
// wants besides qemu-img and qemu-io, skipping the test when something is
// missing, except under CI=true, where it fails.
func need(t *testing.T) (dir string, progs map[string]string) {
	t.Helper()
	missing := func(msg string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir = os.Getenv("MINIVMM_QEMU_IOTESTS")
	if dir == "" {
		dir = defaultDir
	}
	if _, err := os.Stat(filepath.Join(dir, "check")); err != nil {
		missing("QEMU's iotests not found in " + dir + " (run .ci/qemu-iotests, or set MINIVMM_QEMU_IOTESTS)")
	}
	progs = map[string]string{}
	for env, name := range map[string]string{
		"QEMU_PROG":     "qemu-system-x86_64",
		"QEMU_NBD_PROG": "qemu-nbd",
		"QSD_PROG":      "qemu-storage-daemon",
		"PYTHON":        "python3",
	} {
		p, err := exec.LookPath(name)
		if err != nil {
			missing(name + " not installed (apt-get install qemu-system-x86 qemu-utils python3)")
		}
		progs[env] = p
	}
	return dir, progs
}

func TestQEMUIotests(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU's iotests take a minute or more; not in -short")
	}
	dir, progs := need(t)
	fdtest.Check(t)
	bin := t.TempDir()
	minivmm := filepath.Join(bin, "minivmm")
	build := exec.Command("go", "build", "-o", minivmm, "minivmm/cmd/minivmm")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building minivmm: %v\n%s", err, out)
	}
	// minivmm is qemu-img and qemu-io when called by those names.
	for _, name := range []string{"qemu-img", "qemu-io"} {
		if err := os.Symlink("minivmm", filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, format := range []string{"qcow2", "raw"} {
		t.Run(format, func(t *testing.T) {
			runCheck(t, dir, bin, progs, format, pinned[format])
		})
	}
}

// runCheck runs QEMU's check for tests on format and fails naming every test
// that did not pass, with its diff (or the reason it did not run).
func runCheck(t *testing.T, dir, bin string, progs map[string]string, format string, tests []string) {
	// check takes the directory it is called from as its build directory
	// (its cache of run times goes there) when called through a symlink;
	// the tests themselves run in the suite's directory.
	work := t.TempDir()
	check := filepath.Join(work, "check")
	abs, err := filepath.Abs(filepath.Join(dir, "check"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, check); err != nil {
		t.Fatal(err)
	}
	scratch := filepath.Join(work, "scratch")
	// Sockets' paths must stay short (108 bytes): not under t.TempDir()'s
	// long names.
	sock, err := os.MkdirTemp("", "iot")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	if err := os.Mkdir(scratch, 0o755); err != nil {
		t.Fatal(err)
	}
	jobs := runtime.NumCPU()
	if jobs > 4 {
		jobs = 4
	}
	args := append([]string{check, "-tap", "-j", fmt.Sprint(jobs), "-" + format}, tests...)
	cmd := exec.Command(progs["PYTHON"], args...)
	cmd.Dir = work
	cmd.Env = append(os.Environ(),
		"QEMU_PROG="+progs["QEMU_PROG"],
		"QEMU_NBD_PROG="+progs["QEMU_NBD_PROG"],
		"QSD_PROG="+progs["QSD_PROG"],
		"QEMU_IMG_PROG="+filepath.Join(bin, "qemu-img"),
		"QEMU_IO_PROG="+filepath.Join(bin, "qemu-io"),
		"TEST_DIR="+scratch,
		"SOCK_DIR="+sock,
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run() // non-zero when a test fails: the results say which

	results := parseTAP(stdout.String(), format)
	diffs := splitDiffs(stderr.String())
	for _, name := range tests {
		switch results[name] {
		case "pass":
		case "fail":
			t.Errorf("iotest %s -%s failed:\n%s", name, format, diffs[name])
		case "skip":
			reason, _ := os.ReadFile(filepath.Join(scratch, name, name+".notrun"))
			t.Errorf("iotest %s -%s did not run: %s", name, format, strings.TrimSpace(string(reason)))
		default:
			t.Errorf("iotest %s -%s: no result from check (%v)\nstdout:\n%s\nstderr:\n%s",
				name, format, runErr, stdout.String(), stderr.String())
		}
	}
}

// tapJoined is a TAP result glued to the end of another line.
var tapJoined = regexp.MustCompile(`(\S)((?:not )?ok )`)

// parseTAP reads check's -tap lines: "ok FMT NNN", "not ok FMT NNN",
// "ok FMT NNN # SKIP".
func parseTAP(out, format string) map[string]string {
	res := map[string]string{}
	// With -j, two jobs' lines may run together ("ok raw 077ok raw 104"):
	// a result starts a line of its own.
	out = tapJoined.ReplaceAllString(out, "$1\n$2")
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		status := "pass"
		switch {
		case strings.HasPrefix(line, "not ok "):
			status, line = "fail", strings.TrimPrefix(line, "not ok ")
		case strings.HasPrefix(line, "ok "):
			line = strings.TrimPrefix(line, "ok ")
		default:
			continue
		}
		if rest, ok := strings.CutSuffix(line, " # SKIP"); ok {
			status, line = "skip", rest
		}
		f, name, ok := strings.Cut(line, " ")
		if !ok || f != format {
			continue
		}
		res[name] = status
	}
	return res
}

// splitDiffs splits check's stderr, where -tap puts the unified diffs of the
// failed tests one after another, into each test's diff, keyed by the test
// named in the diff's "+++ .../NNN.out.bad" line.
func splitDiffs(out string) map[string]string {
	res := map[string]string{}
	lines := strings.Split(out, "\n")
	start := -1
	flush := func(end int) {
		if start < 0 || start+1 >= len(lines) {
			return
		}
		bad, ok := strings.CutPrefix(lines[start+1], "+++ ")
		if !ok {
			return
		}
		name := strings.TrimSuffix(filepath.Base(bad), ".out.bad")
		res[name] = strings.Join(lines[start:end], "\n")
	}
	for i, l := range lines {
		if strings.HasPrefix(l, "--- ") && i+1 < len(lines) && strings.HasPrefix(lines[i+1], "+++ ") {
			flush(i)
			start = i
		}
	}
	flush(len(lines))
	return res
}
