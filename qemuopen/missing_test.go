package qemuopen

import "testing"

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
