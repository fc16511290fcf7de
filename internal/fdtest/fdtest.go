// Package fdtest checks that a test leaves the process's open file
// descriptors as it found them.
package fdtest

import (
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// warmUp makes the Go runtime create the descriptors it keeps for itself
// (the netpoller's epoll fd and its wake-up eventfd) before anything is
// counted, so that they are not mistaken for a leak.
func warmUp() {
	r, w, err := os.Pipe()
	if err == nil {
		r.Close()
		w.Close()
	}
}

// warmed makes every listing start after warmUp: a child process that
// lists its fds around one run (the tools' per-run check) would otherwise
// count the netpoller's, made by the first timer or pipe of the run.
var warmed sync.Once

// Open lists the file descriptors the calling process has open.
func Open() []int {
	warmed.Do(warmUp)
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	fds := make([]int, 0, len(entries))
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err == nil {
			fds = append(fds, n)
		}
	}
	// ReadDir itself held one descriptor open on /proc/self/fd; it is
	// closed now, so drop it from the list.
	sort.Ints(fds)
	return live(fds)
}

// live drops descriptors that are no longer open (the directory handle
// ReadDir used while listing).
func live(fds []int) []int {
	out := fds[:0]
	for _, fd := range fds {
		if _, err := os.Stat("/proc/self/fd/" + strconv.Itoa(fd)); err == nil {
			out = append(out, fd)
		}
	}
	return out
}

// Count is the number of descriptors the calling process has open.
func Count() int { return len(Open()) }

// Check records the open descriptors now and, when the test ends, fails it
// if any descriptor opened since is still open or any that was open is gone.
func Check(t testing.TB) {
	t.Helper()
	warmUp()
	before := Open()
	t.Cleanup(func() {
		after := Open()
		if diff := describe(before, after); diff != "" {
			t.Errorf("fd leak check: %s", diff)
		}
	})
}

func describe(before, after []int) string {
	was := map[int]bool{}
	for _, fd := range before {
		was[fd] = true
	}
	var added []string
	for _, fd := range after {
		if !was[fd] {
			target, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
			added = append(added, strconv.Itoa(fd)+" -> "+target)
		}
		delete(was, fd)
	}
	var gone []string
	for fd := range was {
		gone = append(gone, strconv.Itoa(fd))
	}
	sort.Strings(gone)
	var parts []string
	if len(added) > 0 {
		parts = append(parts, "still open: "+strings.Join(added, ", "))
	}
	if len(gone) > 0 {
		parts = append(parts, "closed behind the test's back: "+strings.Join(gone, ", "))
	}
	return strings.Join(parts, "; ")
}

// CountOf is the number of descriptors process pid has open (for checking a
// child process such as the minivmm binary under test).
func CountOf(pid int) (int, error) {
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, err
	}
	return len(entries), nil
}
