// Package qemuopen is minivmm's door to files: QEMU-style fdsets, and
// [Registry.Open] / [Registry.Close], the qemu_open/qemu_close every part of
// the VMM opens and closes files with.
//
// A management layer (libvirt) opens files itself and hands the VMM file
// descriptors, grouped into fdsets named /dev/fdset/N. Opening such a path
// opens nothing: it picks the fd of the set whose access mode and O_DIRECT
// flag match the request and returns a duplicate of it. Because everything
// opens by path, reopening a node read-write and back works the same with
// fds as with files.
package qemuopen

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// Owner says who added a user fd: the command line, or one monitor
// connection (a value from [Registry.NewOwner]). The closing rules depend on
// it: fds a connection added are closed when it goes away and nothing uses
// them; command-line fds are never closed automatically.
type Owner uint64

// CommandLine owns the fds given with -add-fd.
const CommandLine Owner = 0

// Config selects the registry's policies.
type Config struct {
	// FdsetOnly refuses every plain path, for a VMM run confined with fds
	// only (-fdset-only).
	FdsetOnly bool
	// KeepUnused selects QEMU 9.1's rule (-fdset-autoclose off): user fds are
	// closed only by remove-fd or at exit, never because their connection
	// went away.
	KeepUnused bool
}

// Registry owns every fdset of a process. The zero value is not usable; make
// one with [New]. It is safe for concurrent use.
type Registry struct {
	cfg Config

	mu        sync.Mutex
	sets      map[int64]*fdset
	dups      fdTable        // dup handed out by Open -> its set
	userFds   map[int]*fdset // fd held in a set -> the set
	lastOwner Owner
	ofd       ofdTable // byte locks per open file description (ofdlock.go)
}

type fdset struct {
	id   int64
	fds  []*userFd // oldest first, as query-fdsets lists them
	dups int       // dups handed out by Open and not yet closed
}

type userFd struct {
	fd     int
	flags  int // O_ACCMODE|O_DIRECT of its open file description
	opaque *string
	owner  Owner
	// orphaned: its connection is gone but the set was in use at the time;
	// it is closed when the set's last dup is.
	orphaned bool
}

// New returns an empty registry.
func New(cfg Config) *Registry {
	return &Registry{
		cfg:     cfg,
		sets:    map[int64]*fdset{},
		userFds: map[int]*fdset{},
	}
}

// NewOwner returns an owner for a new monitor connection.
func (r *Registry) NewOwner() Owner {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastOwner++
	return r.lastOwner
}

// AddRequest describes one add-fd.
type AddRequest struct {
	SetID  *int64  // nil: the lowest free id, from 0
	Opaque *string // nil: none (query-fdsets omits it)
	Owner  Owner
}

// FdInfo is one user fd as query-fdsets shows it.
type FdInfo struct {
	Fd     int
	Opaque *string
}

// FdsetInfo is one set as query-fdsets shows it.
type FdsetInfo struct {
	ID  int64
	Fds []FdInfo
}

// ErrNegativeSetID is add-fd's refusal of a negative fdset-id, in QEMU's words.
var ErrNegativeSetID = errors.New("Parameter 'fdset-id' expects a non-negative value")

// NotFoundError is remove-fd's (and closefd's) "not found", in QEMU's words.
type NotFoundError struct{ Name string }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("File descriptor named '%s' not found", e.Name)
}

// AddFd puts fd into a set and takes ownership of it: on error fd is closed,
// so the caller never has to account for it again.
func (r *Registry) AddFd(fd int, req AddRequest) (FdInfo, int64, error) {
	if req.SetID != nil && *req.SetID < 0 {
		unix.Close(fd)
		return FdInfo{}, 0, ErrNegativeSetID
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		unix.Close(fd)
		return FdInfo{}, 0, fmt.Errorf("fd %d: %w", fd, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var id int64
	if req.SetID != nil {
		id = *req.SetID
	} else {
		for r.sets[id] != nil {
			id++
		}
	}
	set := r.sets[id]
	if set == nil {
		set = &fdset{id: id}
		r.sets[id] = set
	}
	set.fds = append(set.fds, &userFd{fd: fd, flags: fl & matchFlags, opaque: req.Opaque, owner: req.Owner})
	r.userFds[fd] = set
	return FdInfo{Fd: fd, Opaque: req.Opaque}, id, nil
}

// RemoveFd closes one user fd of a set (fd != nil) or all of them, at once
// and whatever the run state. A set whose dups are still in use stays,
// listed with no fds, until its last dup is closed.
func (r *Registry) RemoveFd(setID int64, fd *int) error {
	r.mu.Lock()
	set := r.sets[setID]
	var closing []int
	if set != nil {
		if fd == nil {
			for _, u := range set.fds {
				closing = append(closing, u.fd)
			}
			set.fds = nil
		} else if i := slices.IndexFunc(set.fds, func(u *userFd) bool { return u.fd == *fd }); i >= 0 {
			closing = append(closing, *fd)
			set.fds = slices.Delete(set.fds, i, i+1)
		} else {
			set = nil
		}
	}
	if set != nil {
		for _, c := range closing {
			delete(r.userFds, c)
		}
		r.freeIfEmpty(set)
	}
	r.mu.Unlock()
	if set == nil {
		name := fmt.Sprintf("fdset-id:%d", setID)
		if fd != nil {
			name += fmt.Sprintf(", fd:%d", *fd)
		}
		return &NotFoundError{Name: name}
	}
	closeAll(closing)
	return nil
}

// Query lists the sets as query-fdsets does: sets by descending id, each
// set's fds oldest first. Dups are never listed.
func (r *Registry) Query() []FdsetInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]FdsetInfo, 0, len(r.sets))
	for _, set := range r.sets {
		info := FdsetInfo{ID: set.id, Fds: make([]FdInfo, 0, len(set.fds))}
		for _, u := range set.fds {
			info.Fds = append(info.Fds, FdInfo{Fd: u.fd, Opaque: u.opaque})
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b FdsetInfo) int { return cmp.Compare(b.ID, a.ID) })
	return out
}

// OwnerGone applies the closing rules when a monitor connection closes: the
// fds it added to sets nobody uses are closed now; those in sets in use are
// closed when the set's last dup is.
func (r *Registry) OwnerGone(o Owner) {
	if o == CommandLine || r.cfg.KeepUnused {
		return
	}
	r.mu.Lock()
	var closing []int
	for _, set := range r.sets {
		kept := set.fds[:0]
		for _, u := range set.fds {
			switch {
			case u.owner != o:
				kept = append(kept, u)
			case set.dups > 0:
				u.orphaned = true
				kept = append(kept, u)
			default:
				closing = append(closing, u.fd)
				delete(r.userFds, u.fd)
			}
		}
		clear(set.fds[len(kept):])
		set.fds = kept
		r.freeIfEmpty(set)
	}
	r.mu.Unlock()
	closeAll(closing)
}

// CloseAll closes every user fd and forgets every set, as at exit. Dups
// still out belong to whoever opened them.
func (r *Registry) CloseAll() {
	r.mu.Lock()
	var closing []int
	for fd := range r.userFds {
		closing = append(closing, fd)
	}
	clear(r.userFds)
	clear(r.sets)
	r.dups = fdTable{}
	r.mu.Unlock()
	closeAll(closing)
}

// freeIfEmpty drops a set with neither user fds nor dups. r.mu must be held.
func (r *Registry) freeIfEmpty(set *fdset) {
	if len(set.fds) == 0 && set.dups == 0 {
		delete(r.sets, set.id)
	}
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// fdTable maps fd numbers to sets. Fd numbers are small and dense, so a
// slice indexed by fd beats a map on the Open/Close path, which is
// measured against a bare dup+close.
type fdTable struct{ sets []*fdset }

func (t *fdTable) get(fd int) *fdset {
	if fd < 0 || fd >= len(t.sets) {
		return nil
	}
	return t.sets[fd]
}

func (t *fdTable) set(fd int, s *fdset) {
	if fd >= len(t.sets) {
		t.sets = append(t.sets, make([]*fdset, fd+1-len(t.sets)+16)...)
	}
	t.sets[fd] = s
}
