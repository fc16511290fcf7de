package quorum

import (
	"errors"
	"fmt"
	"slices"
	"strconv"

	"minivmm/block"
)

// Children added and removed at run time (x-blockdev-change), as QEMU's
// quorum_add_child and quorum_del_child: a new child is "children.N"
// with N one past the highest given so far, and N goes back down only
// when the last one added goes.

func (q *image) NextChildRole() (string, error) {
	if q.cfg.blkverify {
		return "", errors.New("Cannot add a child to a quorum in blkverify mode")
	}
	q.mu.RLock()
	defer q.mu.RUnlock()
	return "children." + strconv.Itoa(q.next), nil
}

func (q *image) AddChild(role string, c *block.Node) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.kids = append(slices.Clip(q.kids), c)
	q.roles = append(q.roles, role)
	q.next++
}

func (q *image) CanRemoveChild(string) error {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if len(q.kids) <= q.cfg.threshold {
		return fmt.Errorf("The number of children cannot be lower than the vote threshold %d", q.cfg.threshold)
	}
	return nil
}

func (q *image) RemoveChild(role string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := slices.Index(q.roles, role)
	if i < 0 {
		return
	}
	if role == "children."+strconv.Itoa(q.next-1) {
		q.next--
	}
	// A new slice: requests may still hold the old one (children()).
	q.kids = slices.Delete(slices.Clone(q.kids), i, i+1)
	q.roles = slices.Delete(slices.Clone(q.roles), i, i+1)
}
