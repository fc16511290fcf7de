package qemuopen

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// FdsetPrefix starts every path that names an fdset: /dev/fdset/N.
const FdsetPrefix = "/dev/fdset/"

// matchFlags are the flags an fdset fd must share with a request to be
// picked: the access mode, and O_DIRECT (QEMU >= 9.1's rule; an O_DIRECT fd
// handed to a caller that did not ask for it breaks unaligned IO, and the
// reverse silently loses the cache mode asked for).
const matchFlags = unix.O_ACCMODE | unix.O_DIRECT

// Error is what Open, Create and Close return: the path, the errno beneath
// (so errors.Is(err, unix.EACCES) works) and, where there is more to say, a
// sentence naming what was asked and what was there.
type Error struct {
	Path  string
	Errno unix.Errno
	Msg   string
}

func (e *Error) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	return fmt.Sprintf("Could not open '%s': %s", e.Path, Strerror(e.Errno))
}

// Strerror is the C library's text for errno ("No such file or
// directory"), which QEMU's messages carry; Go's differs only in case.
func Strerror(errno unix.Errno) string {
	s := errno.Error()
	if s != "" && s[0] >= 'a' && s[0] <= 'z' {
		s = string(s[0]-'a'+'A') + s[1:]
	}
	return s
}

func (e *Error) Unwrap() error { return e.Errno }

// Open is qemu_open: it opens path with flags and returns a new fd with
// FD_CLOEXEC set. For /dev/fdset/N it returns a dup of the set's fd whose
// access mode and O_DIRECT match flags exactly; it never changes the file
// status flags of the fds the management layer passed. Close the result with
// [Registry.Close].
func (r *Registry) Open(path string, flags int) (int, error) {
	return r.open(path, flags, 0)
}

// Create is Open with O_CREAT and a mode for a file that does not exist. On
// an fdset the file exists already; O_TRUNC truncates it.
func (r *Registry) Create(path string, flags int, mode uint32) (int, error) {
	return r.open(path, flags|unix.O_CREAT, mode)
}

func (r *Registry) open(path string, flags int, mode uint32) (int, error) {
	if strings.HasPrefix(path, FdsetPrefix) {
		return r.openFdset(path, flags)
	}
	if r.cfg.FdsetOnly {
		return -1, &Error{Path: path, Errno: unix.EACCES,
			Msg: fmt.Sprintf("Could not open '%s': only /dev/fdset/N paths may be opened (-fdset-only)", path)}
	}
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, mode)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &Error{Path: path, Errno: err.(unix.Errno)}
		}
		return fd, nil
	}
}

func (r *Registry) openFdset(path string, flags int) (int, error) {
	id, ok := parseSetID(path[len(FdsetPrefix):])
	if !ok {
		return -1, &Error{Path: path, Errno: unix.EINVAL, Msg: "Could not parse fdset " + path}
	}
	want := flags & matchFlags
	r.mu.Lock()
	set := r.sets[id]
	if set == nil {
		msg := missingSetMessage(path, id, r.sets)
		r.mu.Unlock()
		return -1, &Error{Path: path, Errno: unix.ENOENT, Msg: msg}
	}
	// The newest matching fd, as QEMU picks: a management layer that adds
	// a fresh fd to a set means it to be used.
	var picked *userFd
	for i := len(set.fds) - 1; i >= 0; i-- {
		if set.fds[i].flags == want {
			picked = set.fds[i]
			break
		}
	}
	if picked == nil {
		msg := noMatchMessage(set, flags, want)
		r.mu.Unlock()
		return -1, &Error{Path: path, Errno: unix.EACCES, Msg: msg}
	}
	// The dup is made under the lock so that remove-fd cannot close the
	// user fd between picking and duplicating it.
	dup, err := unix.FcntlInt(uintptr(picked.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		r.mu.Unlock()
		return -1, &Error{Path: path, Errno: err.(unix.Errno),
			Msg: fmt.Sprintf("Could not dup fd %d of fdset %d: %v", picked.fd, id, err)}
	}
	set.dups++
	r.dups.set(dup, set)
	r.noteDup(dup, picked)
	r.mu.Unlock()
	if flags&unix.O_TRUNC != 0 {
		if err := unix.Ftruncate(dup, 0); err != nil {
			r.Close(dup)
			return -1, &Error{Path: path, Errno: err.(unix.Errno),
				Msg: fmt.Sprintf("Could not truncate '%s': %v", path, err)}
		}
	}
	return dup, nil
}

// Close is qemu_close: it closes fd and, when fd came from an fdset, forgets
// the dup; a set left with neither user fds nor dups is freed, and user fds
// whose connection is gone are closed with their set's last dup. Closing a
// user fd of a set is refused: only remove-fd may do that.
func (r *Registry) Close(fd int) error {
	r.mu.Lock()
	set := r.dups.get(fd)
	var closing []int
	if set != nil {
		r.dups.set(fd, nil)
		delete(r.ofd.dupOf, fd)
		set.dups--
		if set.dups == 0 {
			closing = r.dropOrphans(set)
			r.freeIfEmpty(set)
		}
	} else if owner, held := r.userFds[fd]; held {
		r.mu.Unlock()
		return &Error{Path: fmt.Sprint(fd), Errno: unix.EBADF,
			Msg: fmt.Sprintf("fd %d belongs to fdset %d: only remove-fd may close it", fd, owner.id)}
	}
	r.mu.Unlock()
	// Closed after the lock is dropped: the fd number is ours until here, so
	// no concurrent Open can be handed the same number while it is listed.
	err := unix.Close(fd)
	closeAll(closing)
	if err != nil {
		return &Error{Path: fmt.Sprint(fd), Errno: err.(unix.Errno), Msg: fmt.Sprintf("close fd %d: %v", fd, err)}
	}
	return nil
}

// dropOrphans removes from set the user fds whose connection is gone and
// returns them for closing. r.mu must be held.
func (r *Registry) dropOrphans(set *fdset) []int {
	var closing []int
	kept := set.fds[:0]
	for _, u := range set.fds {
		if u.orphaned {
			closing = append(closing, u.fd)
			delete(r.userFds, u.fd)
		} else {
			kept = append(kept, u)
		}
	}
	clear(set.fds[len(kept):])
	set.fds = kept
	return closing
}

// parseSetID reads the N of /dev/fdset/N: plain decimal digits, the whole
// string, 0 to 2^63-1 (every id add-fd accepts can be opened).
func parseSetID(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	var id int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if id > (1<<63-1-d)/10 {
			return 0, false
		}
		id = id*10 + d
	}
	return id, true
}

// missingSetMessage is QEMU 9.1's text for a set that does not exist
// (monitor_fdset_dup_fd_add; 7.2 said "Could not dup FD for PATH flags N:
// No such file or directory"), then which sets do exist.
func missingSetMessage(path string, id int64, sets map[int64]*fdset) string {
	ids := slices.Sorted(maps.Keys(sets))
	var b strings.Builder
	fmt.Fprintf(&b, "Failed to find fdset %s (fdset %d does not exist; ", path, id)
	if len(ids) == 0 {
		b.WriteString("there are no fdsets)")
		return b.String()
	}
	b.WriteString("fdsets:")
	const show = 8
	for _, i := range ids[:min(len(ids), show)] {
		fmt.Fprintf(&b, " %d", i)
	}
	if len(ids) > show {
		fmt.Fprintf(&b, " and %d more", len(ids)-show)
	}
	b.WriteByte(')')
	return b.String()
}

// noMatchMessage is QEMU 9.1's text for a set without an fd whose flags
// match (monitor_fdset_dup_fd_add, which prints the flags qemu_open was
// given; 7.2 said "Could not dup FD for PATH flags N: Permission denied"),
// then what minivmm compared and what the set holds. O_CLOEXEC and
// O_NONBLOCK are left out of the number: QEMU's callers pass neither;
// minivmm adds them (O_NONBLOCK so that a FIFO cannot block the open).
func noMatchMessage(set *fdset, flags, want int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Failed to find file descriptor with matching flags=0x%x (fdset %d has no fd with flags %s; ",
		flags&^(unix.O_CLOEXEC|unix.O_NONBLOCK), set.id, FlagString(want))
	if len(set.fds) == 0 {
		b.WriteString("it holds no fds)")
		return b.String()
	}
	b.WriteString("it holds")
	for i, u := range set.fds {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " fd %d %s", u.fd, FlagString(u.flags))
	}
	b.WriteByte(')')
	return b.String()
}

// FlagString names the access mode and O_DIRECT of flags, e.g. "O_RDWR|O_DIRECT".
func FlagString(flags int) string {
	var s string
	switch flags & unix.O_ACCMODE {
	case unix.O_RDONLY:
		s = "O_RDONLY"
	case unix.O_WRONLY:
		s = "O_WRONLY"
	case unix.O_RDWR:
		s = "O_RDWR"
	default:
		s = "O_ACCMODE"
	}
	if flags&unix.O_DIRECT != 0 {
		s += "|O_DIRECT"
	}
	return s
}
