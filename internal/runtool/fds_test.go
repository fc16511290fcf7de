package runtool

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minivmm/internal/fdtest"
)

// TestPhaseFds reads this process's own fds the way run reads the VMM's:
// fdset members apart, the others by image and mode; a mode other than
// the expected one, or a member count off, fails the run.
func TestPhaseFds(t *testing.T) {
	fdtest.Check(t)
	dir := t.TempDir()
	a := &image{path: filepath.Join(dir, "a.raw")}
	b := &image{path: filepath.Join(dir, "b.qcow2")}
	var files []*os.File
	open := func(img *image, mode int) *os.File {
		f, err := os.OpenFile(img.path, mode|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		return f
	}
	member := open(a, os.O_RDWR)
	open(a, os.O_RDONLY)
	open(b, os.O_RDWR)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, img := range []*image{a, b} {
		info, err := os.Stat(img.path)
		if err != nil {
			t.Fatal(err)
		}
		img.info = info
	}
	tests := []struct {
		name       string
		aOpen, aRW bool
		bOpen, bRW bool
		members    int
		want       string
		ok         bool
	}{
		{"as expected", true, false, true, true, 1, "fds: a.raw RO, b.qcow2 RW\n", true},
		{"a read-write expected", true, true, true, true, 1, "a.raw RO (expected RW: FAILED)", false},
		{"b closed expected", true, false, false, false, 1, "b.qcow2 RW (expected -: FAILED)", false},
		{"members off", true, false, true, true, 2, "1 fdset fds (expected 2: FAILED)", false},
	}
	for _, tc := range tests {
		var out bytes.Buffer
		r := &runner{cfg: Config{Stdout: &out, Stderr: &out}, pid: os.Getpid(), t0: time.Now(),
			chains:  []*chain{{top: a}, {top: b}},
			members: map[int]bool{int(member.Fd()): true}, membersHeld: tc.members}
		r.fdsOK.Store(true)
		a.open, a.rw, b.open, b.rw = tc.aOpen, tc.aRW, tc.bOpen, tc.bRW
		r.phase(tc.name)
		if !strings.Contains(out.String(), tc.want) || r.fdsOK.Load() != tc.ok {
			t.Errorf("%s: fds ok %v, want %v; output lacks %q:\n%s", tc.name, r.fdsOK.Load(), tc.ok, tc.want, out.String())
		}
	}
}

func TestParseFdinfoMode(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"pos:\t0\nflags:\t0100000\nmnt_id:\t27\n", "RO"},
		{"pos:\t0\nflags:\t02100002\nmnt_id:\t27\n", "RW"},
		{"flags:\t01\n", "WO"},
		{"pos:\t0\n", ""},
		{"flags:\t9\n", ""},
	} {
		got, err := parseFdinfoMode(tc.in)
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseFdinfoMode(f *testing.F) {
	f.Add("pos:\t0\nflags:\t02100002\nmnt_id:\t27\n")
	f.Add("flags:\t0100000\n")
	f.Fuzz(func(t *testing.T, in string) {
		mode, err := parseFdinfoMode(in)
		if err == nil && mode != "RO" && mode != "RW" && mode != "WO" {
			t.Fatalf("%q: mode %q", in, mode)
		}
	})
}
