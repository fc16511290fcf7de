package qemuopen

import (
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// Byte-range locks taken with F_OFD_SETLK belong to an open file
// description, not to an fd or a process: every dup of an fdset's fd shares
// the user fd's description and so its locks. Closing a dup releases
// nothing while the set (or another dup) keeps the description open, and
// unlocking a byte through one dup unlocks it for all of them. QEMU 7.2
// closes a node's dup without unlocking, which leaves its locks in the set
// for good; unlocking blindly would instead take locks away from another
// node using the same set. So the registry, which makes the dups, counts
// who holds which byte on each description.

// ofdTable is the holders of byte locks, per open file description.
type ofdTable struct {
	mu      sync.Mutex
	holders map[any][]*ByteLocks // description -> holders
	dupOf   map[int]*userFd      // dup -> the user fd it was made from (under Registry.mu)
}

// noteDup records which user fd a dup shares its description with.
// r.mu must be held.
func (r *Registry) noteDup(dup int, u *userFd) {
	if r.ofd.dupOf == nil {
		r.ofd.dupOf = map[int]*userFd{}
	}
	r.ofd.dupOf[dup] = u
}

// plainFd is the description of an fd that is nobody's dup: its own.
type plainFd int

// description identifies the open file description fd refers to.
func (r *Registry) description(fd int) any {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u := r.ofd.dupOf[fd]; u != nil {
		return u
	}
	return plainFd(fd)
}

// ByteLocks are the shared (F_RDLCK) one-byte OFD locks one holder, such as
// a block node, keeps through one fd. Holders whose fds share a
// description see each other here, where the kernel cannot tell them
// apart. Release them before closing the fd. Not safe for concurrent use
// by several goroutines; different holders may be used concurrently.
type ByteLocks struct {
	r    *Registry
	fd   int
	desc any
	held []int64 // sorted
}

// NewByteLocks starts a holder of locks through fd, an fd from
// [Registry.Open] that is still open.
func (r *Registry) NewByteLocks(fd int) *ByteLocks {
	l := &ByteLocks{r: r, fd: fd, desc: r.description(fd)}
	t := &r.ofd
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.holders == nil {
		t.holders = map[any][]*ByteLocks{}
	}
	t.holders[l.desc] = append(t.holders[l.desc], l)
	return l
}

func flockOne(typ int16, off int64) *unix.Flock_t {
	return &unix.Flock_t{Type: typ, Whence: unix.SEEK_SET, Start: off, Len: 1}
}

func fcntlLock(fd, cmd int, lk *unix.Flock_t) error {
	for {
		err := unix.FcntlFlock(uintptr(fd), cmd, lk)
		if err != unix.EINTR {
			return err
		}
	}
}

// Holds reports whether this holder holds byte off.
func (l *ByteLocks) Holds(off int64) bool {
	_, found := slices.BinarySearch(l.held, off)
	return found
}

// Lock takes a shared lock on byte off. Shared locks never conflict with
// each other; an error is the file system's (ENOLCK, EINVAL for a kernel
// without OFD locks).
func (l *ByteLocks) Lock(off int64) error {
	// Under the table's lock, so that a holder sharing the description
	// cannot unlock the byte between our fcntl and our record of it.
	t := &l.r.ofd
	t.mu.Lock()
	defer t.mu.Unlock()
	i, found := slices.BinarySearch(l.held, off)
	if found {
		return nil
	}
	if err := fcntlLock(l.fd, unix.F_OFD_SETLK, flockOne(unix.F_RDLCK, off)); err != nil {
		return err
	}
	l.held = slices.Insert(l.held, i, off)
	return nil
}

// Unlock drops this holder's lock on byte off; the description keeps it
// while another holder sharing the description holds it.
func (l *ByteLocks) Unlock(off int64) error {
	t := &l.r.ofd
	t.mu.Lock()
	defer t.mu.Unlock()
	i, found := slices.BinarySearch(l.held, off)
	if !found {
		return nil
	}
	l.held = slices.Delete(l.held, i, i+1)
	if l.sharedLocked(off) {
		return nil
	}
	return fcntlLock(l.fd, unix.F_OFD_SETLK, flockOne(unix.F_UNLCK, off))
}

// sharedLocked reports whether another holder on l's description holds off.
// t.mu must be held.
func (l *ByteLocks) sharedLocked(off int64) bool {
	for _, h := range l.r.ofd.holders[l.desc] {
		if h != l && h.Holds(off) {
			return true
		}
	}
	return false
}

// Test reports whether anyone but this holder has a lock on byte off: a
// lock through another open file description (any process, this one
// included), or another holder sharing this one's description. This is
// QEMU's "exclusive" test (F_OFD_GETLK for F_WRLCK).
func (l *ByteLocks) Test(off int64) (bool, error) {
	t := &l.r.ofd
	t.mu.Lock()
	shared := l.sharedLocked(off)
	t.mu.Unlock()
	if shared {
		return true, nil
	}
	lk := flockOne(unix.F_WRLCK, off)
	if err := fcntlLock(l.fd, unix.F_OFD_GETLK, lk); err != nil {
		return false, err
	}
	return lk.Type != unix.F_UNLCK, nil
}

// Release drops every lock this holder has and forgets it. Call it before
// closing the fd: a dup's description outlives the dup.
func (l *ByteLocks) Release() error {
	var first error
	for len(l.held) > 0 {
		if err := l.Unlock(l.held[len(l.held)-1]); err != nil && first == nil {
			first = err
		}
	}
	t := &l.r.ofd
	t.mu.Lock()
	hs := slices.DeleteFunc(t.holders[l.desc], func(h *ByteLocks) bool { return h == l })
	if len(hs) == 0 {
		delete(t.holders, l.desc)
	} else {
		t.holders[l.desc] = hs
	}
	t.mu.Unlock()
	return first
}
