package file

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/qemuopen"
)

// Image locking as QEMU's file-posix does it, so that minivmm and QEMU
// processes keep each other off one image. Each permission a user can
// need of an image is a bit; for bit i, a user holding the permission
// takes a shared OFD lock on byte 100+i, and a user not letting others
// have it (not sharing it) takes one on byte 200+i. All locks are shared
// (F_RDLCK): taking one never fails for another's. A conflict is found by
// testing, before taking: a permission we need is refused if anyone holds
// its "unshared" byte, and a permission we do not share is refused if
// anyone holds its permission byte.

// perm is a set of QEMU's BLK_PERM_* bits; bit i is locked at byte
// permBase+i (holding it) or sharedBase+i (not sharing it).
type perm uint8

const (
	permConsistentRead perm = 1 << iota
	permWrite
	permWriteUnchanged
	permResize
	// QEMU up to 6.1 had a fifth bit, "change children" (graph-mod,
	// bytes 104 and 204); 6.2 dropped it, and 7.2 neither takes nor tests
	// those bytes. Nor do we.
	permAll = permConsistentRead | permWrite | permWriteUnchanged | permResize
)

const (
	permBase   = 100 // libvirt takes byte 0; QEMU leaves room above it
	sharedBase = 200
	permBits   = 4
)

var permNames = [permBits]string{"consistent read", "write", "write unchanged", "resize"}

// lockSet is what a user needs of the image and what it lets others do.
type lockSet struct {
	perm   perm
	shared perm
}

// lockSetOf is what a node's parents and users need of it and share, as
// the graph computes them (QEMU's cumulative permissions): a file node
// nobody uses locks nothing; under a read-write qcow2 it needs consistent
// read, write and resize and shares neither write nor resize, whether or
// not anyone writes; with force-share=on it shares everything. QEMU 7.2's
// and block's bits are the same.
func lockSetOf(p, shared block.Perms) lockSet {
	return lockSet{perm: perm(p) & permAll, shared: perm(shared) & permAll}
}

// unlocked is what a node holds before anyone uses it.
var unlocked = lockSet{shared: permAll}

// bytes lists the bytes s locks: its permissions', then those of what it
// does not share.
func (s lockSet) bytes() []int64 {
	var out []int64
	for i := range permBits {
		if s.perm&(1<<i) != 0 {
			out = append(out, permBase+int64(i))
		}
	}
	for i := range permBits {
		if s.shared&(1<<i) == 0 {
			out = append(out, sharedBase+int64(i))
		}
	}
	return out
}

// allBytes are every byte a lock set may hold.
var allBytes = lockSet{perm: permAll}.bytes()

// union is what holding both a and b locks.
func union(a, b lockSet) lockSet { return lockSet{perm: a.perm | b.perm, shared: a.shared & b.shared} }

// LockError is a permission another user of the image keeps us from:
// QEMU's "Failed to get "write" lock" when another user does not share
// what we need, "Failed to get shared "write" lock" when another user
// holds what we will not share.
type LockError struct {
	Filename string
	Perm     string // QEMU's name of the permission: "write", "consistent read", ...
	Shared   bool   // another holds Perm, which we do not share
	Err      error  // why the test itself failed; nil when another user holds the byte
}

func (e *LockError) Error() string {
	s := "Failed to get "
	if e.Shared {
		s += "shared "
	}
	s += `"` + e.Perm + `" lock`
	if e.Err != nil {
		s += ": " + strerror(e.Err)
	}
	return s
}

// Hint is the line QEMU adds for people (qemu-img, qemu-io and the
// command line print it; QMP does not send it).
func (e *LockError) Hint() string {
	return fmt.Sprintf("Is another process using the image [%s]?", e.Filename)
}

// Unwrap: EAGAIN for a conflict, as QEMU's qemu_lock_fd_test reports it.
func (e *LockError) Unwrap() error {
	if e.Err != nil {
		return e.Err
	}
	return unix.EAGAIN
}

// strerror words an errno as the C library does.
func strerror(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return qemuopen.Strerror(errno)
	}
	return err.Error()
}

// lockByteError is a failure to take a lock at all (a file system without
// byte-range locks), in QEMU's words.
func lockByteError(off int64, err error) error {
	if err == unix.EAGAIN || err == unix.EACCES {
		return fmt.Errorf("Failed to lock byte %d", off)
	}
	return fmt.Errorf("Failed to lock byte %d: %s", off, strerror(err))
}

// apply makes l hold exactly the bytes of s or, with keep, at least them
// (bytes it holds beyond s stay).
func apply(l *qemuopen.ByteLocks, s lockSet, keep bool) error {
	want := map[int64]bool{}
	for _, off := range s.bytes() {
		want[off] = true
		if err := l.Lock(off); err != nil {
			return lockByteError(off, err)
		}
	}
	if keep {
		return nil
	}
	for _, off := range allBytes {
		if !want[off] && l.Holds(off) {
			if err := l.Unlock(off); err != nil {
				return fmt.Errorf("Failed to unlock byte %d: %s", off, strerror(err))
			}
		}
	}
	return nil
}

// check tests, in QEMU's order, whether another user keeps s from the
// image: first whether anyone does not share a permission s needs, then
// whether anyone holds one s does not share.
func check(l *qemuopen.ByteLocks, s lockSet, filename string) error {
	for i := range permBits {
		if s.perm&(1<<i) == 0 {
			continue
		}
		if held, err := l.Test(sharedBase + int64(i)); held || err != nil {
			return &LockError{Filename: filename, Perm: permNames[i], Err: err}
		}
	}
	for i := range permBits {
		if s.shared&(1<<i) != 0 {
			continue
		}
		if held, err := l.Test(permBase + int64(i)); held || err != nil {
			return &LockError{Filename: filename, Perm: permNames[i], Shared: true, Err: err}
		}
	}
	return nil
}

// locking reads the locking option: auto is on where the kernel has OFD
// locks (QEMU's rule), which fd, just opened, is asked about.
func locking(mode string, fd int) (bool, error) {
	if mode == "off" {
		return false, nil
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: unix.SEEK_SET, Start: permBase, Len: 1}
	err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk)
	if err == unix.EINVAL || err == unix.ENOSYS {
		if mode == "on" {
			// QEMU falls back to POSIX locks, which any close of any fd
			// of the file drops; a lock that silently goes is worse than
			// an error.
			return false, errors.New("File lock requested but OFD locking syscall is unavailable")
		}
		return false, nil
	}
	return true, nil
}

// lockNew takes s on a newly opened fd: the locks first, then the test, as
// QEMU does (two openers racing both see each other). On error it holds
// nothing.
func lockNew(files *qemuopen.Registry, fd int, s lockSet, filename string) (*qemuopen.ByteLocks, error) {
	l := files.NewByteLocks(fd)
	err := apply(l, s, false)
	if err == nil {
		err = check(l, s, filename)
	}
	if err != nil {
		l.Release()
		return nil, err
	}
	return l, nil
}

// relock is a prepared change of a node's locks (QEMU's raw_handle_perm_lock
// and raw_check_perm): the old fd holds the union of old and new until
// commit, so that nobody slips in between; when the reopen swaps fds, the
// new fd takes the new locks in prepare, and the old fd's are released at
// commit, before it is closed.
type relock struct {
	old, new   lockSet
	oldL, newL *qemuopen.ByteLocks // newL nil: the fd stays
}

// prepareRelock moves the locks held by oldL (as old) towards next, on
// newFd when the reopen swaps fds (-1: it does not). On error nothing has
// changed.
func prepareRelock(files *qemuopen.Registry, oldL *qemuopen.ByteLocks, old, next lockSet, newFd int, filename string) (*relock, error) {
	r := &relock{old: old, new: next, oldL: oldL}
	if union(old, next) != old {
		// Something new is needed or no longer shared: test it on the old
		// fd, which sees every other description's locks but not its own
		// (the old locks must not count against us).
		err := apply(oldL, union(old, next), true)
		if err == nil {
			err = check(oldL, next, filename)
		}
		if err != nil {
			apply(oldL, old, false)
			return nil, err
		}
	}
	if newFd >= 0 {
		r.newL = files.NewByteLocks(newFd)
		if err := apply(r.newL, next, false); err != nil {
			r.newL.Release()
			apply(oldL, old, false)
			return nil, err
		}
	}
	return r, nil
}

// commit leaves the node holding the new locks: on the new fd (the old
// fd's are released; the caller closes it next), or on the same fd.
func (r *relock) commit() *qemuopen.ByteLocks {
	if r.newL != nil {
		r.oldL.Release()
		return r.newL
	}
	apply(r.oldL, r.new, false)
	return r.oldL
}

// abort goes back to the old locks and releases the new fd's (the caller
// closes it next).
func (r *relock) abort() {
	if r.newL != nil {
		r.newL.Release()
	}
	apply(r.oldL, r.old, false)
}

// imageLocks is a file node's locking state.
type imageLocks struct {
	on   bool
	set  lockSet             // what the node holds, when on
	held *qemuopen.ByteLocks // through the node's fd, when on
}

// lockOpen applies the locking option to img's fd, just opened: nothing
// is locked until the node's parents and users say what they need.
func (img *image) lockOpen(mode string) error {
	on, err := locking(mode, img.fd)
	if err != nil || !on {
		return err
	}
	img.locks = imageLocks{on: true, set: unlocked, held: img.files.NewByteLocks(img.fd)}
	return nil
}

// prepareLocks prepares moving the node's locks to next, on newFd if the
// reopen swaps fds (else -1). nil: nothing to change.
func (img *image) prepareLocks(next lockSet, newFd int) (*relock, error) {
	if !img.locks.on || next == img.locks.set && newFd < 0 {
		return nil, nil
	}
	return prepareRelock(img.files, img.locks.held, img.locks.set, next, newFd, img.filename)
}

// PreparePerm is a change of what the node's parents and users need and
// share: the locks are tested and taken now, trimmed at commit.
func (img *image) PreparePerm(p, shared block.Perms) (block.Pending, error) {
	switch rl, err := img.prepareLocks(lockSetOf(p, shared), -1); {
	case err != nil:
		return nil, err
	case rl == nil:
		return noChange{}, nil
	default:
		return relocked{img, rl}, nil
	}
}

func (img *image) commitLocks(r *relock) {
	if r != nil {
		img.locks.held, img.locks.set = r.commit(), r.new
	}
}

// unlock releases every lock before img's fd is closed: the fd may be a
// dup whose open file description, and so its locks, outlive it.
func (img *image) unlock() {
	if img.locks.held != nil {
		img.locks.held.Release()
		img.locks.held = nil
	}
}

// relocked is a change of locks on the node's fd.
type relocked struct {
	img *image
	r   *relock
}

func (p relocked) Commit() { p.img.commitLocks(p.r) }
func (p relocked) Abort()  { p.r.abort() }

// LockForCreate takes, on fd (just opened read-write to create or
// overwrite filename, before anything is written), the locks QEMU's
// file-posix takes while it creates an image — it needs write and resize
// and lets nobody else resize — and fails as QEMU does when someone else
// uses the image ("Failed to get "write" lock"; the error has the hint).
// release drops them; call it before closing fd. On error nothing is held.
func LockForCreate(files *qemuopen.Registry, fd int, filename string) (release func(), err error) {
	if on, err := locking("auto", fd); err != nil || !on {
		return func() {}, err
	}
	l, err := lockNew(files, fd, lockSet{perm: permWrite | permResize, shared: permAll &^ permResize}, filename)
	if err != nil {
		return nil, err
	}
	return func() { l.Release() }, nil
}
