package file_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/block/file"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// lockBytes are every byte QEMU 7.2's scheme uses.
var lockBytes = []int64{100, 101, 102, 103, 200, 201, 202, 203}

// Byte sets by role, as QEMU 7.2 locks a qcow2 image (see
// TestLockBytesMatchQEMU).
var (
	writerBytes = []int64{100, 101, 103, 201, 203}
	readerBytes = []int64{100, 201, 203}
	sharerBytes = []int64{100}
	// A raw node's writer (qemu-io -f raw): raw passes its user's needs
	// on, and the user shares everything.
	rawWriterBytes = []int64{100, 101}
)

func fixture(t *testing.T) (*block.Graph, *qemuopen.Registry) {
	t.Helper()
	fdtest.Check(t)
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	t.Cleanup(func() {
		g.Close()
		reg.CloseAll()
	})
	return g, reg
}

func image(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// seenFrom lists the lock bytes held through any open file description
// but fd's own (F_OFD_GETLK, as QEMU tests them).
func seenFrom(t *testing.T, fd int) []int64 {
	t.Helper()
	var held []int64
	for _, off := range lockBytes {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: unix.SEEK_SET, Start: off, Len: 1}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
			t.Fatalf("F_OFD_GETLK %d: %v", off, err)
		}
		if lk.Type != unix.F_UNLCK {
			held = append(held, off)
		}
	}
	return held
}

// locked lists the lock bytes anyone holds on path.
func locked(t *testing.T, path string) []int64 {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	return seenFrom(t, fd)
}

func wantBytes(t *testing.T, what string, got, want []int64) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: locked bytes %v, want %v", what, got, want)
	}
}

func TestLockBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts string
		want []int64
	}{
		{"writer", `{"driver":"file","filename":%q}`, writerBytes},
		{"reader", `{"driver":"file","filename":%q,"read-only":true}`, readerBytes},
		{"force-share reader", `{"driver":"file","filename":%q,"read-only":true,"force-share":true}`, sharerBytes},
		{"locking=on", `{"driver":"file","filename":%q,"read-only":true,"locking":"on"}`, readerBytes},
		{"locking=off writer", `{"driver":"file","filename":%q,"locking":"off"}`, nil},
		{"locking=off reader", `{"driver":"file","filename":%q,"read-only":true,"locking":"off"}`, nil},
		{"force-share inherited by the file child", `{"driver":"image-test","read-only":true,"force-share":true,"file":{"driver":"file","filename":%q}}`, sharerBytes},
		// raw passes on what its users need: none, nothing locked.
		{"raw without users", `{"driver":"raw","file":{"driver":"file","filename":%q}}`, nil},
		{"raw, auto-read-only, without users", `{"driver":"raw","auto-read-only":true,"file":{"driver":"file","filename":%q}}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, _ := fixture(t)
			path := image(t)
			n, err := g.Add(opts(t, tc.opts, path))
			if err != nil {
				t.Fatal(err)
			}
			wantBytes(t, "open", locked(t, path), tc.want)
			g.Delete(n.Name())
			wantBytes(t, "after blockdev-del", locked(t, path), nil)
		})
	}
}

// opts parses a node's options; a lone file node is put under an
// image-test format node (asImage), which needs of it what qcow2 needs: in
// QEMU, as here, a file node nobody uses locks nothing.
func opts(t *testing.T, format string, a ...any) block.Options {
	t.Helper()
	return asImage(plainOpts(t, format, a...))
}

// plainOpts parses a node's options as they are.
func plainOpts(t *testing.T, format string, a ...any) block.Options {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(fmt.Sprintf(format, a...)))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("bad test options: %v", err)
	}
	return block.Options(m)
}

// A writer arriving at an auto-read-only raw node reopens it read-write
// and locks what it needs (raw passes it on); when it leaves, nothing is
// locked.
func TestLocksFollowWriters(t *testing.T) {
	g, _ := fixture(t)
	path := image(t)
	n, err := g.Add(opts(t, `{"driver":"raw","node-name":"d","auto-read-only":true,"file":{"driver":"file","filename":%q}}`, path))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		b, err := g.Attach("", n, block.Perm{Write: true})
		if err != nil {
			t.Fatal(err)
		}
		wantBytes(t, "with a writer", locked(t, path), rawWriterBytes)
		g.Detach(b)
		wantBytes(t, "writer gone", locked(t, path), nil)
	}
}

// Two users of one image, the second refused as QEMU refuses it, with its
// words, and holding nothing afterwards.
func TestLockConflicts(t *testing.T) {
	const (
		rw     = `{"driver":"file","filename":%q}`
		ro     = `{"driver":"file","filename":%q,"read-only":true}`
		shared = `{"driver":"file","filename":%q,"read-only":true,"force-share":true}`
		rwOff  = `{"driver":"file","filename":%q,"locking":"off"}`
	)
	for _, tc := range []struct {
		name          string
		first, second string
		want          string // "" : allowed
		bytes         []int64
	}{
		{"writer, writer", rw, rw, `Failed to get "write" lock`, writerBytes},
		{"writer, reader", rw, ro, `Failed to get shared "write" lock`, writerBytes},
		{"reader, writer", ro, rw, `Failed to get "write" lock`, readerBytes},
		{"reader, reader", ro, ro, "", readerBytes},
		{"writer, force-share reader", rw, shared, "", writerBytes},
		{"force-share reader, writer", shared, rw, "", writerBytes},
		{"writer, writer without locking", rw, rwOff, "", writerBytes},
		{"writer without locking, writer", rwOff, rw, "", writerBytes},
		{"force-share writer", rw, `{"driver":"file","filename":%q,"force-share":true}`,
			"force-share=on can only be used with read-only images", writerBytes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, _ := fixture(t)
			path := image(t)
			if _, err := g.Add(opts(t, tc.first, path)); err != nil {
				t.Fatal(err)
			}
			before := fdtest.Count()
			_, err := g.Add(opts(t, tc.second, path))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("second open: %v", err)
			case tc.want == "":
			case err == nil || err.Error() != tc.want:
				t.Fatalf("second open: %v, want %q", err, tc.want)
			default:
				if fdtest.Count() != before {
					t.Errorf("a refused open left fds: %d, was %d", fdtest.Count(), before)
				}
				var le interface{ Hint() string }
				if errors.As(err, &le) {
					if want := fmt.Sprintf("Is another process using the image [%s]?", path); le.Hint() != want {
						t.Errorf("hint %q, want %q", le.Hint(), want)
					}
					if !errors.Is(err, unix.EAGAIN) {
						t.Errorf("%v is not EAGAIN", err)
					}
				} else if tc.want != "force-share=on can only be used with read-only images" {
					t.Errorf("%T has no hint", err)
				}
			}
			wantBytes(t, "after", locked(t, path), tc.bytes)
		})
	}
}

// fdsetFixture puts an O_RDONLY and an O_RDWR fd of path into set 1 and
// returns them (the registry owns them).
func fdsetFixture(t *testing.T, reg *qemuopen.Registry, path string) (ro, rw int) {
	t.Helper()
	var fds [2]int
	for i, mode := range []int{unix.O_RDONLY, unix.O_RDWR} {
		fd, err := unix.Open(path, mode|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		set := int64(1)
		if _, _, err := reg.AddFd(fd, qemuopen.AddRequest{SetID: &set}); err != nil {
			t.Fatal(err)
		}
		fds[i] = fd
	}
	return fds[0], fds[1]
}

// QEMU 7.2 closes a node's fdset dup without unlocking: the locks stay on
// the set fd's open file description, and the node later conflicts with
// itself (block-stream over fdsets: "Failed to get "write" lock"). Here a
// node goes ro -> rw -> ro -> rw -> ro over a set, each set fd's
// description holding exactly what the node holds through it and nothing
// once the node left it; then another writer is refused while the node
// reads, and let in once it is gone.
func TestReopenOverFdsetLeavesNoStaleLocks(t *testing.T) {
	g, reg := fixture(t)
	path := image(t)
	roFd, rwFd := fdsetFixture(t, reg, path)
	node := func(ro bool) block.Options {
		return opts(t, `{"driver":"file","node-name":"f","filename":"/dev/fdset/1","read-only":%t}`, ro)
	}
	if _, err := g.Add(node(true)); err != nil {
		t.Fatal(err)
	}
	for i, ro := range []bool{true, false, true, false, true} {
		if i > 0 {
			if err := g.Reopen([]block.Options{node(ro)}); err != nil {
				t.Fatalf("step %d: reopen read-only=%t: %v", i, ro, err)
			}
		}
		want, inUse, idle := writerBytes, rwFd, roFd
		if ro {
			want, inUse, idle = readerBytes, roFd, rwFd
		}
		wantBytes(t, fmt.Sprintf("step %d: the image", i), locked(t, path), want)
		// Seen from the set fd the node uses: what the other
		// description holds, which must be nothing.
		wantBytes(t, fmt.Sprintf("step %d: the idle set fd's description", i), seenFrom(t, inUse), nil)
		wantBytes(t, fmt.Sprintf("step %d: the node's description", i), seenFrom(t, idle), want)
	}
	other, err := g.Add(opts(t, `{"driver":"file","filename":%q}`, path))
	if err == nil || err.Error() != `Failed to get "write" lock` {
		t.Fatalf("another writer while the node reads: %v", err)
	}
	g.Delete("f")
	wantBytes(t, "node gone", locked(t, path), nil)
	if other, err = g.Add(opts(t, `{"driver":"file","filename":%q}`, path)); err != nil {
		t.Fatalf("another writer once the node is gone: %v", err)
	}
	g.Delete(other.Name())
}

// The same over an internal reopen, as a job or a device gets write
// access to an auto-read-only node on an fdset and gives it back, twice.
func TestWriterComesAndGoesOverFdset(t *testing.T) {
	g, reg := fixture(t)
	path := image(t)
	roFd, rwFd := fdsetFixture(t, reg, path)
	n, err := g.Add(opts(t, `{"driver":"raw","node-name":"d","auto-read-only":true,"file":{"driver":"file","filename":"/dev/fdset/1"}}`))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		b, err := g.Attach("", n, block.Perm{Write: true})
		if err != nil {
			t.Fatalf("round %d: writer: %v", i, err)
		}
		wantBytes(t, "writing", seenFrom(t, roFd), rawWriterBytes)
		wantBytes(t, "writing: the read-only fd's description", seenFrom(t, rwFd), nil)
		g.Detach(b)
		wantBytes(t, "read-only again", seenFrom(t, rwFd), nil)
		wantBytes(t, "read-only again: the read-write fd's description", seenFrom(t, roFd), nil)
	}
}

// A reopen refused for a lock leaves the node as it was: its fd, its
// locks, no new fd.
func TestRefusedReopenChangesNothing(t *testing.T) {
	g, reg := fixture(t)
	path := image(t)
	fdsetFixture(t, reg, path)
	for _, tc := range []struct {
		name, node, reopen, other, want string
		bytes                           []int64
	}{
		// The fd changes (O_RDONLY -> O_RDWR); another reader does not
		// share write.
		{"ro -> rw over an fdset", `{"driver":"file","node-name":"f","filename":"/dev/fdset/1","read-only":true}`,
			`{"driver":"file","node-name":"f","filename":"/dev/fdset/1","read-only":false}`,
			`{"driver":"file","filename":%q,"read-only":true}`, `Failed to get "write" lock`, readerBytes},
		// The fd stays; force-share goes while another writes.
		{"force-share off", `{"driver":"file","node-name":"f","filename":%q,"read-only":true,"force-share":true}`,
			`{"driver":"file","node-name":"f","filename":%q,"read-only":true}`,
			`{"driver":"file","filename":%q}`, `Failed to get shared "write" lock`, writerBytes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := g.Add(opts(t, tc.node, path)); err != nil {
				t.Fatal(err)
			}
			other, err := g.Add(opts(t, tc.other, path))
			if err != nil {
				t.Fatal(err)
			}
			fds := fdtest.Open()
			before := locked(t, path)
			err = g.Reopen([]block.Options{opts(t, tc.reopen, path)})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("reopen: %v, want %q", err, tc.want)
			}
			if got := fdtest.Open(); !slices.Equal(got, fds) {
				t.Errorf("fds %v, were %v", got, fds)
			}
			wantBytes(t, "after the refused reopen", locked(t, path), before)
			g.Delete(other.Name())
			g.Delete("f")
			wantBytes(t, "all gone", locked(t, path), nil)
		})
	}
}

// Creating over an image in use is refused as qemu-img create refuses it;
// over a -U reader it is not (QEMU's rule: create needs write and resize
// and unshares only resize).
func TestLockForCreate(t *testing.T) {
	for _, tc := range []struct {
		name, holder, want string
	}{
		{"writer", `{"driver":"file","filename":%q}`, `Failed to get "write" lock`},
		{"reader", `{"driver":"file","filename":%q,"read-only":true}`, `Failed to get "write" lock`},
		{"force-share reader", `{"driver":"file","filename":%q,"read-only":true,"force-share":true}`, ""},
		{"nobody", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, reg := fixture(t)
			path := image(t)
			if tc.holder != "" {
				if _, err := g.Add(opts(t, tc.holder, path)); err != nil {
					t.Fatal(err)
				}
			}
			before := locked(t, path)
			fd, err := reg.Open(path, unix.O_RDWR)
			if err != nil {
				t.Fatal(err)
			}
			defer reg.Close(fd)
			release, err := file.LockForCreate(reg, fd, path)
			if tc.want != "" {
				if err == nil || err.Error() != tc.want {
					t.Fatalf("LockForCreate: %v, want %q", err, tc.want)
				}
				wantBytes(t, "after a refusal", locked(t, path), before)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// Held: a reader (it would unshare write) is kept out.
			if _, err := g.Add(opts(t, `{"driver":"file","filename":%q,"read-only":true}`, path)); err == nil ||
				err.Error() != `Failed to get shared "write" lock` {
				t.Errorf("a reader while creating: %v", err)
			}
			release()
			wantBytes(t, "released", locked(t, path), before)
		})
	}
}

// A transaction whose second node fails (no O_RDWR fd in its set) aborts
// the first: its new fd's locks are released and the old fd's union is
// narrowed back, nothing left of the attempt.
func TestAbortedTransactionRestoresLocks(t *testing.T) {
	g, reg := fixture(t)
	a, b := image(t), image(t)
	fdsetFixture(t, reg, a)
	fd, err := unix.Open(b, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	set := int64(2)
	if _, _, err := reg.AddFd(fd, qemuopen.AddRequest{SetID: &set}); err != nil {
		t.Fatal(err)
	}
	node := func(name string, set int, ro bool) block.Options {
		return opts(t, `{"driver":"file","node-name":%q,"filename":"/dev/fdset/%d","read-only":%t}`, name, set, ro)
	}
	for _, o := range []block.Options{node("a", 1, true), node("b", 2, true)} {
		if _, err := g.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	fds := fdtest.Open()
	err = g.Reopen([]block.Options{node("a", 1, false), node("b", 2, false)})
	if err == nil || !errors.Is(err, unix.EACCES) {
		t.Fatalf("reopen: %v, want EACCES for set 2", err)
	}
	if got := fdtest.Open(); !slices.Equal(got, fds) {
		t.Errorf("fds %v, were %v", got, fds)
	}
	wantBytes(t, "a after the abort", locked(t, a), readerBytes)
	wantBytes(t, "b after the abort", locked(t, b), readerBytes)
}
