package qemuopen

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
)

// testFile makes a file and returns a path to it.
func testFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// openRaw opens path the way a management layer would before passing it.
func openRaw(t *testing.T, path string, flags int) int {
	t.Helper()
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return fd
}

func ptr[T any](v T) *T { return &v }

func add(t *testing.T, r *Registry, fd int, set int64, owner Owner) {
	t.Helper()
	if _, _, err := r.AddFd(fd, AddRequest{SetID: &set, Owner: owner}); err != nil {
		t.Fatalf("AddFd(%d, set %d): %v", fd, set, err)
	}
}

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

func accessModeOf(t *testing.T, fd int) int {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatalf("F_GETFL %d: %v", fd, err)
	}
	return fl & matchFlags
}

func TestAddFdIDs(t *testing.T) {
	fdtest.Check(t)
	path := testFile(t)
	r := New(Config{})
	defer r.CloseAll()
	// Without an id: the lowest free one from 0, filling holes.
	for want := int64(0); want < 3; want++ {
		_, id, err := r.AddFd(openRaw(t, path, unix.O_RDONLY), AddRequest{})
		if err != nil || id != want {
			t.Fatalf("AddFd without id = %d, %v; want %d", id, err, want)
		}
	}
	if err := r.RemoveFd(1, nil); err != nil {
		t.Fatal(err)
	}
	if _, id, _ := r.AddFd(openRaw(t, path, unix.O_RDONLY), AddRequest{}); id != 1 {
		t.Fatalf("hole not reused: got set %d", id)
	}
	// The largest id there is, and a negative one (refused, fd closed).
	info, id, err := r.AddFd(openRaw(t, path, unix.O_RDONLY), AddRequest{SetID: ptr[int64](1<<63 - 1), Opaque: ptr("big")})
	if err != nil || id != 1<<63-1 || *info.Opaque != "big" {
		t.Fatalf("max id: %v %d %v", info, id, err)
	}
	fd := openRaw(t, path, unix.O_RDONLY)
	if _, _, err := r.AddFd(fd, AddRequest{SetID: ptr[int64](-1)}); !errors.Is(err, ErrNegativeSetID) {
		t.Fatalf("negative id: %v", err)
	}
	if isOpen(fd) {
		t.Fatal("refused fd left open")
	}
}

func TestQueryOrder(t *testing.T) {
	fdtest.Check(t)
	path := testFile(t)
	r := New(Config{})
	defer r.CloseAll()
	var fds []int
	for _, set := range []int64{2, 7, 2, 0, 7} {
		fd := openRaw(t, path, unix.O_RDONLY)
		fds = append(fds, fd)
		add(t, r, fd, set, CommandLine)
	}
	got := r.Query()
	want := []FdsetInfo{
		{ID: 7, Fds: []FdInfo{{Fd: fds[1]}, {Fd: fds[4]}}},
		{ID: 2, Fds: []FdInfo{{Fd: fds[0]}, {Fd: fds[2]}}},
		{ID: 0, Fds: []FdInfo{{Fd: fds[3]}}},
	}
	if len(got) != len(want) {
		t.Fatalf("Query = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].ID != want[i].ID || len(got[i].Fds) != len(want[i].Fds) {
			t.Fatalf("Query[%d] = %+v, want %+v", i, got[i], want[i])
		}
		for j := range want[i].Fds {
			if got[i].Fds[j].Fd != want[i].Fds[j].Fd {
				t.Fatalf("Query[%d].Fds[%d] = %d, want %d", i, j, got[i].Fds[j].Fd, want[i].Fds[j].Fd)
			}
		}
	}
}

func TestOpenMatchesAccessModeAndDirect(t *testing.T) {
	fdtest.Check(t)
	path := testFile(t)
	r := New(Config{})
	defer r.CloseAll()
	ro := openRaw(t, path, unix.O_RDONLY)
	rw := openRaw(t, path, unix.O_RDWR)
	add(t, r, ro, 3, CommandLine)
	add(t, r, rw, 3, CommandLine)
	direct, derr := unix.Open(path, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if derr == nil {
		add(t, r, direct, 3, CommandLine)
	}

	type openCase struct {
		name  string
		path  string
		flags int
		want  int        // access mode and O_DIRECT of the dup
		errno unix.Errno // 0: success
		msg   string     // substring of the error
	}
	tests := []openCase{
		{"read-only", "/dev/fdset/3", unix.O_RDONLY, unix.O_RDONLY, 0, ""},
		{"read-write", "/dev/fdset/3", unix.O_RDWR, unix.O_RDWR, 0, ""},
		{"extra flags ignored", "/dev/fdset/3", unix.O_RDWR | unix.O_NONBLOCK, unix.O_RDWR, 0, ""},
		{"no write-only fd", "/dev/fdset/3", unix.O_WRONLY, 0, unix.EACCES, "Failed to find file descriptor with matching flags=0x1 (fdset 3 has no fd with flags O_WRONLY; it holds fd "},
		{"unknown set", "/dev/fdset/4", unix.O_RDONLY, 0, unix.ENOENT, "Failed to find fdset /dev/fdset/4 (fdset 4 does not exist; "},
		{"not a number", "/dev/fdset/abc", unix.O_RDONLY, 0, unix.EINVAL, "Could not parse fdset /dev/fdset/abc"},
		{"sign", "/dev/fdset/+3", unix.O_RDONLY, 0, unix.EINVAL, "Could not parse fdset"},
		{"trailing", "/dev/fdset/3x", unix.O_RDONLY, 0, unix.EINVAL, "Could not parse fdset"},
		{"empty", "/dev/fdset/", unix.O_RDONLY, 0, unix.EINVAL, "Could not parse fdset"},
		{"overflow", "/dev/fdset/9223372036854775808", unix.O_RDONLY, 0, unix.EINVAL, "Could not parse fdset"},
	}
	if derr == nil {
		tests = append(tests,
			openCase{"direct", "/dev/fdset/3", unix.O_RDWR | unix.O_DIRECT, unix.O_RDWR | unix.O_DIRECT, 0, ""},
			openCase{"no read-only direct fd", "/dev/fdset/3", unix.O_RDONLY | unix.O_DIRECT, 0, unix.EACCES, "fd " + strconv.Itoa(ro) + " O_RDONLY"})
	} else {
		t.Logf("O_DIRECT not supported on the temp file system (%v); direct cases skipped", derr)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fd, err := r.Open(tc.path, tc.flags)
			if tc.errno != 0 {
				if !errors.Is(err, tc.errno) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("Open(%s, %#x) = %d, %v; want %v containing %q", tc.path, tc.flags, fd, err, tc.errno, tc.msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%s, %#x): %v", tc.path, tc.flags, err)
			}
			defer r.Close(fd)
			if got := accessModeOf(t, fd); got != tc.want {
				t.Errorf("dup has flags %s, want %s", FlagString(got), FlagString(tc.want))
			}
			if fdf, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); fdf&unix.FD_CLOEXEC == 0 {
				t.Error("dup lacks FD_CLOEXEC")
			}
		})
	}
	// The passed fds' open file descriptions were never changed.
	if accessModeOf(t, ro) != unix.O_RDONLY || accessModeOf(t, rw) != unix.O_RDWR {
		t.Error("status flags of a passed fd changed")
	}
	if fl, _ := unix.FcntlInt(uintptr(rw), unix.F_GETFL, 0); fl&unix.O_NONBLOCK != 0 {
		t.Error("O_NONBLOCK was set on the management layer's fd")
	}
}

func TestCreateTruncates(t *testing.T) {
	fdtest.Check(t)
	path := testFile(t)
	r := New(Config{})
	defer r.CloseAll()
	add(t, r, openRaw(t, path, unix.O_RDWR), 1, CommandLine)
	fd, err := r.Create("/dev/fdset/1", unix.O_RDWR|unix.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	r.Close(fd)
	if st, _ := os.Stat(path); st.Size() != 0 {
		t.Fatalf("size after O_TRUNC = %d", st.Size())
	}
	// A plain path is created with the mode asked for.
	newPath := filepath.Join(t.TempDir(), "new")
	fd, err = r.Create(newPath, unix.O_RDWR|unix.O_EXCL, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	r.Close(fd)
	if st, _ := os.Stat(newPath); st.Mode().Perm()&0o077 != 0o040 {
		t.Fatalf("created mode %v", st.Mode())
	}
}

func TestFdsetOnly(t *testing.T) {
	fdtest.Check(t)
	path := testFile(t)
	r := New(Config{FdsetOnly: true})
	defer r.CloseAll()
	if _, err := r.Open(path, unix.O_RDONLY); !errors.Is(err, unix.EACCES) || !strings.Contains(err.Error(), path) {
		t.Fatalf("plain path under -fdset-only: %v", err)
	}
	add(t, r, openRaw(t, path, unix.O_RDONLY), 0, CommandLine)
	fd, err := r.Open("/dev/fdset/0", unix.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	r.Close(fd)
}

func TestRemoveFd(t *testing.T) {
	fdtest.Check(t)
	path := testFile(t)
	r := New(Config{})
	defer r.CloseAll()
	a, b := openRaw(t, path, unix.O_RDONLY), openRaw(t, path, unix.O_RDWR)
	add(t, r, a, 1, CommandLine)
	add(t, r, b, 1, CommandLine)
	for _, tc := range []struct {
		set  int64
		fd   *int
		want string
	}{
		{7, nil, "File descriptor named 'fdset-id:7' not found"},
		{7, ptr(3), "File descriptor named 'fdset-id:7, fd:3' not found"},
		{1, ptr(999), "File descriptor named 'fdset-id:1, fd:999' not found"},
	} {
		if err := r.RemoveFd(tc.set, tc.fd); err == nil || err.Error() != tc.want {
			t.Errorf("RemoveFd(%d, %v) = %v, want %q", tc.set, tc.fd, err, tc.want)
		}
	}
	dup, err := r.Open("/dev/fdset/1", unix.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RemoveFd(1, &a); err != nil || isOpen(a) {
		t.Fatalf("remove one fd: err %v, still open %v", err, isOpen(a))
	}
	if err := r.RemoveFd(1, nil); err != nil || isOpen(b) {
		t.Fatalf("remove the set: err %v, still open %v", err, isOpen(b))
	}
	// The set is in use: listed with no fds until its dup is closed.
	if q := r.Query(); len(q) != 1 || q[0].ID != 1 || len(q[0].Fds) != 0 {
		t.Fatalf("Query with a dup in use = %+v", q)
	}
	if err := r.Close(dup); err != nil {
		t.Fatal(err)
	}
	if q := r.Query(); len(q) != 0 {
		t.Fatalf("set not freed after its last dup: %+v", q)
	}
}

func TestCloseRefusesUserFd(t *testing.T) {
	fdtest.Check(t)
	r := New(Config{})
	defer r.CloseAll()
	fd := openRaw(t, testFile(t), unix.O_RDONLY)
	add(t, r, fd, 0, CommandLine)
	if err := r.Close(fd); !errors.Is(err, unix.EBADF) || !isOpen(fd) {
		t.Fatalf("Close of a user fd: %v (open %v)", err, isOpen(fd))
	}
}

// TestClosingRules walks the rules of the README: what a departing
// connection's fds become, with and without dups in use, under both policies.
func TestClosingRules(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run("keepUnused="+strconv.FormatBool(keep), func(t *testing.T) {
			fdtest.Check(t)
			path := testFile(t)
			r := New(Config{KeepUnused: keep})
			defer r.CloseAll()
			conn := r.NewOwner()
			other := r.NewOwner()
			unused := openRaw(t, path, unix.O_RDONLY)   // set 5: conn's, unused
			used := openRaw(t, path, unix.O_RDONLY)     // set 6: conn's, in use
			cmdline := openRaw(t, path, unix.O_RDONLY)  // set 2: command line, unused
			othersFd := openRaw(t, path, unix.O_RDONLY) // set 5: another connection's
			add(t, r, unused, 5, conn)
			add(t, r, used, 6, conn)
			add(t, r, cmdline, 2, CommandLine)
			add(t, r, othersFd, 5, other)
			dup, err := r.Open("/dev/fdset/6", unix.O_RDONLY)
			if err != nil {
				t.Fatal(err)
			}
			r.OwnerGone(conn)
			if isOpen(unused) == !keep {
				t.Errorf("unused fd of the departed connection open=%v", isOpen(unused))
			}
			if !isOpen(used) || !isOpen(cmdline) || !isOpen(othersFd) {
				t.Errorf("closed too much: used %v cmdline %v other's %v", isOpen(used), isOpen(cmdline), isOpen(othersFd))
			}
			r.Close(dup)
			if isOpen(used) == !keep {
				t.Errorf("in-use fd after last dup closed: open=%v", isOpen(used))
			}
			wantSets := map[int64]bool{2: true, 5: true, 6: keep}
			for _, s := range r.Query() {
				if !wantSets[s.ID] {
					t.Errorf("set %d still listed", s.ID)
				}
				delete(wantSets, s.ID)
			}
			for id, want := range wantSets {
				if want {
					t.Errorf("set %d missing", id)
				}
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	fdtest.Check(t)
	path := testFile(t)
	r := New(Config{})
	defer r.CloseAll()
	add(t, r, openRaw(t, path, unix.O_RDONLY), 0, CommandLine)
	add(t, r, openRaw(t, path, unix.O_RDWR), 0, CommandLine)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			owner := r.NewOwner()
			for i := 0; i < 300; i++ {
				flags := unix.O_RDONLY
				if (g+i)%2 == 0 {
					flags = unix.O_RDWR
				}
				fd, err := r.Open("/dev/fdset/0", flags)
				if err != nil {
					t.Error(err)
					return
				}
				// Churn a set of this goroutine's own meanwhile.
				set := int64(100 + g)
				extra, _ := unix.Dup(fd)
				unix.CloseOnExec(extra)
				r.AddFd(extra, AddRequest{SetID: &set, Owner: owner})
				r.Query()
				if i%3 == 0 {
					r.RemoveFd(set, nil)
				}
				if err := r.Close(fd); err != nil {
					t.Error(err)
				}
			}
			r.OwnerGone(owner)
		}(g)
	}
	wg.Wait()
	if q := r.Query(); len(q) != 1 || len(q[0].Fds) != 2 {
		t.Fatalf("after churn: %+v", q)
	}
}
