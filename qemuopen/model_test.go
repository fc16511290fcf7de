package qemuopen

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
)

// model is the closing rules written as plainly as possible; the registry
// must agree with it after every step.
type model struct {
	keepUnused bool
	sets       map[int64]*modelSet
	dupSet     map[int]int64 // open dups -> set
	gone       map[Owner]bool
}

type modelSet struct {
	fds  []modelFd
	dups int
}

type modelFd struct {
	fd       int
	mode     int
	owner    Owner
	orphaned bool
}

func (m *model) set(id int64) *modelSet {
	if m.sets[id] == nil {
		m.sets[id] = &modelSet{}
	}
	return m.sets[id]
}

func (m *model) gc(id int64) {
	if s := m.sets[id]; s != nil && len(s.fds) == 0 && s.dups == 0 {
		delete(m.sets, id)
	}
}

// expected lists every fd the process should hold beyond the baseline.
func (m *model) expected() []int {
	var fds []int
	for _, s := range m.sets {
		for _, f := range s.fds {
			fds = append(fds, f.fd)
		}
	}
	for fd := range m.dupSet {
		fds = append(fds, fd)
	}
	slices.Sort(fds)
	return fds
}

func TestRegistryAgainstModel(t *testing.T) {
	for _, keep := range []bool{false, true} {
		for seed := uint64(1); seed <= 20; seed++ {
			t.Run(fmt.Sprintf("keep=%v/seed=%d", keep, seed), func(t *testing.T) {
				runModel(t, keep, seed, 300)
			})
		}
	}
}

func runModel(t *testing.T, keep bool, seed uint64, steps int) {
	fdtest.Check(t)
	path := testFile(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	r := New(Config{KeepUnused: keep})
	defer r.CloseAll()
	m := &model{keepUnused: keep, sets: map[int64]*modelSet{}, dupSet: map[int]int64{}, gone: map[Owner]bool{}}
	defer func() {
		for fd := range m.dupSet {
			r.Close(fd)
		}
	}()
	owners := []Owner{CommandLine, r.NewOwner(), r.NewOwner()}
	baseline := fdtest.Open()
	modes := []int{unix.O_RDONLY, unix.O_RDWR}

	for step := 0; step < steps; step++ {
		var what string
		switch op := rng.IntN(6); op {
		case 0, 1: // add-fd
			owner := owners[rng.IntN(len(owners))]
			mode := modes[rng.IntN(2)]
			fd := openRaw(t, path, mode)
			req := AddRequest{Owner: owner}
			if rng.IntN(4) > 0 {
				req.SetID = ptr(int64(rng.IntN(4)))
			}
			_, id, err := r.AddFd(fd, req)
			if err != nil {
				t.Fatalf("step %d: AddFd: %v", step, err)
			}
			if req.SetID == nil {
				want := int64(0)
				for m.sets[want] != nil {
					want++
				}
				if id != want {
					t.Fatalf("step %d: AddFd without id gave set %d, want %d", step, id, want)
				}
			}
			s := m.set(id)
			s.fds = append(s.fds, modelFd{fd: fd, mode: mode, owner: owner})
			what = fmt.Sprintf("add fd %d to set %d by owner %d", fd, id, owner)
		case 2: // remove-fd
			id := int64(rng.IntN(4))
			s := m.sets[id]
			var fd *int
			if s != nil && len(s.fds) > 0 && rng.IntN(2) == 0 {
				fd = &s.fds[rng.IntN(len(s.fds))].fd
			}
			err := r.RemoveFd(id, fd)
			if (s == nil) != (err != nil) {
				t.Fatalf("step %d: RemoveFd(%d, %v) = %v with model set %v", step, id, fd, err, s)
			}
			if s != nil {
				s.fds = slices.DeleteFunc(s.fds, func(f modelFd) bool { return fd == nil || f.fd == *fd })
				m.gc(id)
			}
			what = fmt.Sprintf("remove-fd set %d fd %v", id, fd)
		case 3: // Open
			id := int64(rng.IntN(4))
			mode := modes[rng.IntN(2)]
			fd, err := r.Open(fmt.Sprintf("/dev/fdset/%d", id), mode)
			s := m.sets[id]
			canMatch := s != nil && slices.ContainsFunc(s.fds, func(f modelFd) bool { return f.mode == mode })
			if canMatch != (err == nil) {
				t.Fatalf("step %d: Open(set %d, %s) = %v, model can match: %v", step, id, FlagString(mode), err, canMatch)
			}
			if err == nil {
				s.dups++
				m.dupSet[fd] = id
			}
			what = fmt.Sprintf("open set %d %s -> %d", id, FlagString(mode), fd)
		case 4: // Close a dup
			if len(m.dupSet) == 0 {
				continue
			}
			fds := make([]int, 0, len(m.dupSet))
			for fd := range m.dupSet {
				fds = append(fds, fd)
			}
			slices.Sort(fds)
			fd := fds[rng.IntN(len(fds))]
			if err := r.Close(fd); err != nil {
				t.Fatalf("step %d: Close(%d): %v", step, fd, err)
			}
			id := m.dupSet[fd]
			delete(m.dupSet, fd)
			s := m.sets[id]
			s.dups--
			if s.dups == 0 {
				s.fds = slices.DeleteFunc(s.fds, func(f modelFd) bool { return f.orphaned })
			}
			m.gc(id)
			what = fmt.Sprintf("close dup %d of set %d", fd, id)
		case 5: // a connection goes away and a new one arrives
			i := 1 + rng.IntN(len(owners)-1)
			o := owners[i]
			r.OwnerGone(o)
			owners[i] = r.NewOwner()
			if !keep {
				for id, s := range m.sets {
					for j := range s.fds {
						if s.fds[j].owner == o {
							s.fds[j].orphaned = true
						}
					}
					if s.dups == 0 {
						s.fds = slices.DeleteFunc(s.fds, func(f modelFd) bool { return f.orphaned })
					}
					m.gc(id)
				}
			}
			what = fmt.Sprintf("owner %d gone", o)
		}
		checkAgainstModel(t, r, m, baseline, step, what)
	}
}

func checkAgainstModel(t *testing.T, r *Registry, m *model, baseline []int, step int, what string) {
	t.Helper()
	q := r.Query()
	if len(q) != len(m.sets) {
		t.Fatalf("step %d (%s): registry has %d sets, model %d: %+v", step, what, len(q), len(m.sets), q)
	}
	for i, s := range q {
		if i > 0 && q[i-1].ID <= s.ID {
			t.Fatalf("step %d: sets not in descending order: %+v", step, q)
		}
		ms := m.sets[s.ID]
		if ms == nil || len(ms.fds) != len(s.Fds) {
			t.Fatalf("step %d (%s): set %d = %+v, model %+v", step, what, s.ID, s.Fds, ms)
		}
		for j := range s.Fds {
			if s.Fds[j].Fd != ms.fds[j].fd {
				t.Fatalf("step %d (%s): set %d fd %d = %d, model %d", step, what, s.ID, j, s.Fds[j].Fd, ms.fds[j].fd)
			}
		}
	}
	var extra []int
	for _, fd := range fdtest.Open() {
		if !slices.Contains(baseline, fd) {
			extra = append(extra, fd)
		}
	}
	if want := m.expected(); !slices.Equal(extra, want) {
		t.Fatalf("step %d (%s): process holds %v beyond its baseline, model says %v", step, what, extra, want)
	}
}
