// Package quorum is QEMU's quorum driver: a node over several children
// that hold the same data. Writes go to every child and succeed when
// vote-threshold of them do; reads read every child and return what a
// majority of at least vote-threshold children agree on (or, with
// read-pattern=fifo, the first child that reads at all). A child that
// disagrees or fails is reported (QUORUM_REPORT_BAD), and rewritten with
// the winning data under rewrite-corrupted=on; a request without a
// quorum fails (QUORUM_FAILURE).
package quorum

import (
	"errors"
	"fmt"
	"strconv"
	"sync"

	"minivmm/block"
)

// Name is the driver's name, as QEMU's.
const Name = "quorum"

func init() {
	block.Register(&block.Driver{
		Name: Name,
		Options: map[string]block.OptType{
			"children":          block.OptObject,
			"vote-threshold":    block.OptInt,
			"blkverify":         block.OptBool,
			"rewrite-corrupted": block.OptBool,
			"read-pattern":      block.OptString,
		},
		Required:  []string{"children", "vote-threshold"},
		Open:      open,
		ChildPerm: childPerm,
	})
}

// childPerm is QEMU's quorum_child_perm: a child is needed for what the
// quorum's users need (and written where rewrite-corrupted repairs it),
// and no one else may write or resize it, which would make the children
// differ.
func childPerm(_ string, o block.Options, _ bool, perm, shared block.Perms) (block.Perms, block.Perms) {
	if rewrite, _ := o.Bool("rewrite-corrupted", false); rewrite {
		perm |= block.PermWrite
	}
	return perm, shared & (block.PermConsistentRead | block.PermWriteUnchanged)
}

// config is what the options say, checked as QEMU's quorum_open does.
type config struct {
	children  []any // node-names and inline Options
	threshold int
	blkverify bool
	rewrite   bool
	fifo      bool
}

func parseConfig(o block.Options) (config, error) {
	var c config
	children, err := parseChildren(o["children"])
	if err != nil {
		return c, err
	}
	c.children = children
	t, err := o.Int("vote-threshold", 0)
	if err != nil {
		return c, err
	}
	if t < 1 {
		return c, fmt.Errorf("Parameter 'vote-threshold' expects a value >= 1")
	}
	if t > int64(len(children)) {
		return c, fmt.Errorf("threshold may not exceed children count")
	}
	c.threshold = int(t)
	switch p, err := o.String("read-pattern", "quorum"); {
	case err != nil:
		return c, err
	case p == "fifo":
		c.fifo = true
	case p != "quorum":
		return c, fmt.Errorf("Please set read-pattern as fifo or quorum")
	}
	if c.fifo {
		return c, nil // blkverify and rewrite-corrupted are for votes
	}
	if c.blkverify, err = o.Bool("blkverify", false); err != nil {
		return c, err
	}
	if c.blkverify && (len(children) != 2 || c.threshold != 2) {
		return c, fmt.Errorf("blkverify=on can only be set if there are exactly two files and vote-threshold is 2")
	}
	if c.rewrite, err = o.Bool("rewrite-corrupted", false); err != nil {
		return c, err
	}
	if c.rewrite && c.blkverify {
		return c, fmt.Errorf("rewrite-corrupted=on cannot be used with blkverify=on")
	}
	return c, nil
}

type image struct {
	name  string
	cfg   config
	emit  func(block.DriverEvent)
	mu    sync.RWMutex // children: IO reads them, a child's addition or removal changes them
	kids  []*block.Node
	roles []string
	next  int // the index of the next child added (QEMU's next_child_index)
}

func open(o *block.OpenContext) (block.Image, error) {
	cfg, err := parseConfig(o.Options)
	if err != nil {
		return nil, err
	}
	img := &image{name: o.NodeName, cfg: cfg, emit: o.EmitEvent()}
	for i, ref := range cfg.children {
		role := "children." + strconv.Itoa(i)
		c, err := o.AttachChild(role, ref)
		if err != nil {
			return nil, err
		}
		img.kids = append(img.kids, c)
		img.roles = append(img.roles, role)
	}
	img.next = len(img.kids)
	return img, nil
}

// Length is the children's, which must all be as long (QEMU's
// quorum_co_getlength: Input/output error otherwise).
func (q *image) Length() (int64, error) {
	q.mu.RLock()
	defer q.mu.RUnlock()
	n := q.kids[0].Length()
	for _, c := range q.kids[1:] {
		if c.Length() != n {
			return 0, errLengths
		}
	}
	return n, nil
}

// Close closes nothing: the children are the graph's nodes.
func (q *image) Close() error { return nil }

// children is a snapshot of the children for one request.
func (q *image) children() []*block.Node {
	q.mu.RLock()
	defer q.mu.RUnlock()
	return q.kids
}

// Dirname: the children may lie in different directories, so none is
// the quorum's (QEMU's quorum_dirname), and a relative backing file
// name above it cannot be resolved.
func (q *image) Dirname() (string, error) {
	return "", errors.New("Cannot generate a base directory for quorum nodes")
}

// ActualSize is what the children occupy on the host, together (QEMU's
// bdrv_sum_allocated_file_size: a child that cannot say makes the sum
// unknown).
func (q *image) ActualSize() (int64, error) {
	var sum int64
	for _, c := range q.children() {
		n := c.Info().ActualSize
		if n < 0 {
			return 0, errors.New("quorum: a child's allocated size is unknown")
		}
		sum += n
	}
	return sum, nil
}
