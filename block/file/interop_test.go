package file_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block/file"
	_ "minivmm/block/qcow2"
)

// needQemu skips without qemu-img and qemu-io, except under CI=true.
func needQemu(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (CI=true)", tool)
			}
			t.Skipf("%s not installed; apt-get install qemu-utils", tool)
		}
	}
}

func qcow2Image(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, "1M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	return p
}

// holdQEMU runs qemu-io on path, which holds the image (and its locks)
// until the test ends and its standard input closes.
func holdQEMU(t *testing.T, path string, args ...string) {
	t.Helper()
	cmd := exec.Command("qemu-io", append(args, path)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); len(locked(t, path)) == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("qemu-io %v took no lock: %s", args, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// qemuFails runs a QEMU tool that must fail and returns its stderr.
func qemuFails(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err == nil {
		t.Fatalf("%s %v succeeded", name, args)
	}
	return stderr.String()
}

func qemuRuns(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

var roles = []struct {
	name    string
	qemuIO  []string // how qemu-io opens the image in this role
	options string   // how minivmm does
	bytes   []int64
}{
	{"writer", []string{"-f", "qcow2"}, `{"driver":"qcow2","file":{"driver":"file","filename":%q}}`, writerBytes},
	{"reader", []string{"-r", "-f", "qcow2"}, `{"driver":"qcow2","read-only":true,"file":{"driver":"file","filename":%q}}`, readerBytes},
	{"force-share reader", []string{"-U", "-r", "-f", "qcow2"}, `{"driver":"qcow2","read-only":true,"force-share":true,"file":{"driver":"file","filename":%q}}`, sharerBytes},
}

// minivmm locks the bytes QEMU 7.2 locks for a qcow2 image in each role.
func TestLockBytesMatchQEMU(t *testing.T) {
	needQemu(t)
	for _, r := range roles {
		t.Run(r.name, func(t *testing.T) {
			path := qcow2Image(t)
			holdQEMU(t, path, r.qemuIO...)
			qemuHolds := locked(t, path)
			if !slices.Equal(qemuHolds, r.bytes) {
				t.Fatalf("qemu-io %v locks %v; the test expects %v", r.qemuIO, qemuHolds, r.bytes)
			}
		})
		t.Run(r.name+" minivmm", func(t *testing.T) {
			g, _ := fixture(t)
			path := qcow2Image(t)
			n, err := g.Add(opts(t, r.options, path))
			if err != nil {
				t.Fatal(err)
			}
			wantBytes(t, "minivmm", locked(t, path), r.bytes)
			g.Delete(n.Name())
		})
	}
}

// QEMU's tools, refused by an image minivmm holds, say what they say when
// QEMU holds it; -U gets through.
func TestQEMURefusedByMinivmm(t *testing.T) {
	needQemu(t)
	g, _ := fixture(t)
	path := qcow2Image(t)
	hint := fmt.Sprintf("Is another process using the image [%s]?\n", path)
	n, err := g.Add(opts(t, roles[0].options, path))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := qemuFails(t, "qemu-img", "info", path),
		fmt.Sprintf("qemu-img: Could not open '%s': Failed to get shared \"write\" lock\n", path)+hint; got != want {
		t.Errorf("qemu-img info: %q, want %q", got, want)
	}
	qemuRuns(t, "qemu-img", "info", "-U", path)
	if got, want := qemuFails(t, "qemu-io", "-f", "qcow2", "-c", "read 0 512", path),
		fmt.Sprintf("qemu-io: can't open device %s: Failed to get \"write\" lock\n", path)+hint; got != want {
		t.Errorf("qemu-io: %q, want %q", got, want)
	}
	g.Delete(n.Name())
	// A reader lets qemu-img info in, and keeps writers out.
	if n, err = g.Add(opts(t, roles[1].options, path)); err != nil {
		t.Fatal(err)
	}
	qemuRuns(t, "qemu-img", "info", path)
	if got := qemuFails(t, "qemu-io", "-f", "qcow2", "-c", "write 0 512", path); !strings.Contains(got, `Failed to get "write" lock`) {
		t.Errorf("qemu-io writer next to a minivmm reader: %q", got)
	}
	g.Delete(n.Name())
	qemuRuns(t, "qemu-io", "-f", "qcow2", "-c", "write 0 512", path)
}

// minivmm, refused by an image QEMU holds, says what QEMU's tools say in
// its place.
func TestMinivmmRefusedByQEMU(t *testing.T) {
	needQemu(t)
	for _, tc := range []struct {
		holder []string
		role   int
		want   string
	}{
		{[]string{"-f", "qcow2"}, 0, `Failed to get "write" lock`},
		{[]string{"-f", "qcow2"}, 1, `Failed to get shared "write" lock`},
		{[]string{"-f", "qcow2"}, 2, ""},
		{[]string{"-r", "-f", "qcow2"}, 0, `Failed to get "write" lock`},
		{[]string{"-r", "-f", "qcow2"}, 1, ""},
		{[]string{"-U", "-r", "-f", "qcow2"}, 0, ""},
	} {
		t.Run(fmt.Sprintf("qemu-io %s, minivmm %s", strings.Join(tc.holder, " "), roles[tc.role].name), func(t *testing.T) {
			g, _ := fixture(t)
			path := qcow2Image(t)
			holdQEMU(t, path, tc.holder...)
			n, err := g.Add(opts(t, roles[tc.role].options, path))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				g.Delete(n.Name())
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("open: %v, want %q", err, tc.want)
			}
			// qemu-io in minivmm's place says the same.
			args := append(slices.Clone(roles[tc.role].qemuIO), "-c", "read 0 512", path)
			if got := qemuFails(t, "qemu-io", args...); !strings.Contains(got, ": "+tc.want+"\n") {
				t.Errorf("qemu-io in minivmm's place: %q", got)
			}
		})
	}
}

// Creating over an image qemu-io holds is refused with what qemu-img
// create says, hint included.
func TestLockForCreateMatchesQemuImg(t *testing.T) {
	needQemu(t)
	_, reg := fixture(t)
	path := qcow2Image(t)
	holdQEMU(t, path, "-f", "qcow2")
	want := qemuFails(t, "qemu-img", "create", "-q", "-f", "qcow2", path, "1M")
	fd, err := reg.Open(path, unix.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(fd)
	_, err = file.LockForCreate(reg, fd, path)
	var h interface{ Hint() string }
	if err == nil || !errors.As(err, &h) {
		t.Fatalf("LockForCreate: %v", err)
	}
	if got := fmt.Sprintf("qemu-img: %s: %v\n%s\n", path, err, h.Hint()); got != want {
		t.Errorf("minivmm says %q, qemu-img create %q", got, want)
	}
}
