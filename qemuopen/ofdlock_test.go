package qemuopen

import (
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
)

// lockedFrom reports whether byte off is locked through another open file
// description than fd's.
func lockedFrom(t *testing.T, fd int, off int64) bool {
	t.Helper()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: unix.SEEK_SET, Start: off, Len: 1}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
		t.Fatal(err)
	}
	return lk.Type != unix.F_UNLCK
}

// Two holders on dups of one set fd share its description: one releasing
// its locks must not take the other's, and each sees the other's where the
// kernel cannot.
func TestByteLocksShareADescription(t *testing.T) {
	fdtest.Check(t)
	path := testFile(t)
	r := New(Config{})
	defer r.CloseAll()
	add(t, r, openRaw(t, path, unix.O_RDONLY), 1, CommandLine)
	probe := openRaw(t, path, unix.O_RDONLY)
	defer unix.Close(probe)
	var dups [2]int
	var ls [2]*ByteLocks
	for i := range dups {
		fd, err := r.Open("/dev/fdset/1", unix.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		dups[i], ls[i] = fd, r.NewByteLocks(fd)
		if err := ls[i].Lock(100); err != nil {
			t.Fatal(err)
		}
	}
	if err := ls[0].Lock(201); err != nil {
		t.Fatal(err)
	}
	// The kernel cannot tell the two apart; the registry can.
	if held, err := ls[1].Test(201); err != nil || !held {
		t.Fatalf("holder 1 Test(201) = %v, %v; holder 0 holds it on the same description", held, err)
	}
	if held, err := ls[0].Test(202); err != nil || held {
		t.Fatalf("Test(202) = %v, %v; nobody holds it", held, err)
	}
	if err := ls[0].Release(); err != nil {
		t.Fatal(err)
	}
	r.Close(dups[0])
	if !lockedFrom(t, probe, 100) {
		t.Fatal("byte 100 went with holder 0, but holder 1 still holds it")
	}
	if lockedFrom(t, probe, 201) {
		t.Fatal("byte 201 outlived its only holder (a stale lock in the set)")
	}
	if err := ls[1].Release(); err != nil {
		t.Fatal(err)
	}
	r.Close(dups[1])
	if lockedFrom(t, probe, 100) {
		t.Fatal("byte 100 outlived both holders")
	}
	// A plain fd is its own description: the kernel reports the others.
	plain, err := r.Open(path, unix.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(plain)
	l := r.NewByteLocks(plain)
	defer l.Release()
	if err := l.Lock(103); err != nil {
		t.Fatal(err)
	}
	if !lockedFrom(t, probe, 103) {
		t.Fatal("plain fd's lock not seen")
	}
}

// Holders on dups of one set, used from many goroutines at once: the
// table stays consistent (run with -race) and nothing is left locked.
func TestByteLocksConcurrent(t *testing.T) {
	fdtest.Check(t)
	path := testFile(t)
	r := New(Config{})
	defer r.CloseAll()
	add(t, r, openRaw(t, path, unix.O_RDONLY), 1, CommandLine)
	probe := openRaw(t, path, unix.O_RDONLY)
	defer unix.Close(probe)
	done := make(chan error)
	for g := range 8 {
		go func() {
			fd, err := r.Open("/dev/fdset/1", unix.O_RDONLY)
			if err != nil {
				done <- err
				return
			}
			l := r.NewByteLocks(fd)
			for i := range 200 {
				off := int64(100 + (g+i)%4)
				if err := l.Lock(off); err != nil {
					done <- err
					return
				}
				if _, err := l.Test(off + 100); err != nil {
					done <- err
					return
				}
				if i%3 == 0 {
					l.Unlock(off)
				}
			}
			err = l.Release()
			r.Close(fd)
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for off := int64(100); off < 104; off++ {
		if lockedFrom(t, probe, off) {
			t.Errorf("byte %d still locked after every holder released", off)
		}
	}
}
