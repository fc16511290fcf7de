package qemuopen

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestMissingSetMessage: QEMU 9.1's words first, then the sets there are.
func TestMissingSetMessage(t *testing.T) {
	sets := func(ids ...int64) map[int64]*fdset {
		m := map[int64]*fdset{}
		for _, id := range ids {
			m[id] = &fdset{id: id}
		}
		return m
	}
	for _, tc := range []struct {
		sets map[int64]*fdset
		want string
	}{
		{sets(), "Failed to find fdset /dev/fdset/99 (fdset 99 does not exist; there are no fdsets)"},
		{sets(3, 0), "Failed to find fdset /dev/fdset/99 (fdset 99 does not exist; fdsets: 0 3)"},
		{sets(9, 8, 7, 6, 5, 4, 3, 2, 1, 0), "Failed to find fdset /dev/fdset/99 (fdset 99 does not exist; fdsets: 0 1 2 3 4 5 6 7 and 2 more)"},
	} {
		if got := missingSetMessage("/dev/fdset/99", 99, tc.sets); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

// TestNoMatchMessage: QEMU 9.1's words (with the flags as qemu_open got
// them, O_CLOEXEC aside), then the flags compared and the fds held.
func TestNoMatchMessage(t *testing.T) {
	for _, tc := range []struct {
		fds         []*userFd
		flags, want int
		text        string
	}{
		{nil, unix.O_RDWR | unix.O_CLOEXEC, unix.O_RDWR,
			"Failed to find file descriptor with matching flags=0x2 (fdset 5 has no fd with flags O_RDWR; it holds no fds)"},
		{[]*userFd{{fd: 7, flags: unix.O_RDONLY}, {fd: 9, flags: unix.O_RDWR}}, unix.O_RDWR | unix.O_DIRECT, unix.O_RDWR | unix.O_DIRECT,
			"Failed to find file descriptor with matching flags=0x4002 (fdset 5 has no fd with flags O_RDWR|O_DIRECT; it holds fd 7 O_RDONLY, fd 9 O_RDWR)"},
		{[]*userFd{{fd: 7, flags: unix.O_RDWR}}, unix.O_RDONLY, unix.O_RDONLY,
			"Failed to find file descriptor with matching flags=0x0 (fdset 5 has no fd with flags O_RDONLY; it holds fd 7 O_RDWR)"},
	} {
		if got := noMatchMessage(&fdset{id: 5, fds: tc.fds}, tc.flags, tc.want); got != tc.text {
			t.Errorf("got  %q\nwant %q", got, tc.text)
		}
	}
}
