package quorum

import (
	"bytes"
	"errors"

	"golang.org/x/sys/unix"
)

// A vote groups the children that gave the same answer into versions,
// as QEMU's quorum_count_vote does; the winner is the version with the
// most votes, and among versions with as many, the one seen last
// (QEMU puts each new version at the head of its list and takes the
// first with a strictly greater count).
type version struct {
	first int   // the first child that gave it
	items []int // every child that gave it, in order
}

// winner is the index into versions of the winning version.
func winner(versions []version) int {
	w := -1
	for i := len(versions) - 1; i >= 0; i-- {
		if w < 0 || len(versions[i].items) > len(versions[w].items) {
			w = i
		}
	}
	return w
}

// voteData groups the children that read successfully (ok) by what
// they read.
func voteData(bufs [][]byte, ok []bool) []version {
	var vs []version
	for i, b := range bufs {
		if !ok[i] {
			continue
		}
		found := false
		for j := range vs {
			if bytes.Equal(bufs[vs[j].first], b) {
				vs[j].items = append(vs[j].items, i)
				found = true
				break
			}
		}
		if !found {
			vs = append(vs, version{first: i, items: []int{i}})
		}
	}
	return vs
}

// errnoOf is the errno an error carries (EIO for one without).
func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}

// voteError is QEMU's quorum_vote_error: of the children's errors, the
// errno most of them failed with (returned as the first child's error
// with that errno, which names the node).
func voteError(errs []error) error {
	var vs []version
	var codes []unix.Errno
	for i, err := range errs {
		if err == nil {
			continue
		}
		e := errnoOf(err)
		found := false
		for j, c := range codes {
			if c == e {
				vs[j].items = append(vs[j].items, i)
				found = true
				break
			}
		}
		if !found {
			codes = append(codes, e)
			vs = append(vs, version{first: i, items: []int{i}})
		}
	}
	if len(vs) == 0 {
		return nil
	}
	return errs[vs[winner(vs)].first]
}
