package jobs

import (
	"context"
	"fmt"

	"minivmm/block"
	"minivmm/block/engine"
	"minivmm/block/filter"
)

// Commit is block-commit with an intermediate top (QEMU's commit job):
// the data of Top and the images between it and Base goes into Base,
// then Top's overlay is given Base as its backing file, dropping them
// from the chain. Base is read-write for the job only: a read-only base
// is reopened read-write at Setup (through the transactional reopen, so
// an image opened as /dev/fdset/N gets the set's O_RDWR fd) and read-only
// again at Clean, whatever the outcome.
type Commit struct {
	Graph     *block.Graph
	Top, Base *block.Node
	// BackingFile is the name written in the overlay's header for Base
	// ("": Base's filename).
	BackingFile string
	// KeepChain leaves the chain as it is at the end (qemu-img commit:
	// the images above base are emptied or left, not unlinked).
	KeepChain bool
	// Unmap lets zeroes deallocate Base's clusters (qemu-img commit,
	// which in QEMU is a mirror job with unmap).
	Unmap bool
	// OnProgress, if set, also gets the engine's progress.
	OnProgress func(done, total int64)
	// Filter: put QEMU's commit_top filter node above Top while the job
	// runs (block-commit), named FilterName ("": a generated name).
	Filter     bool
	FilterName string

	filter *block.Node

	baseWasRO bool
	hold      *block.Backend
	overlay   *block.Node
}

// Setup makes Base writable for the job and finds Top's overlay.
func (c *Commit) Setup(j *Job) error {
	if !c.KeepChain {
		ov, ok := c.Top.Parent("backing")
		if !ok {
			return fmt.Errorf("Could not find an overlay of '%s'", c.Top.Name())
		}
		c.overlay = ov
	}
	c.baseWasRO = c.Base.ReadOnly()
	if err := c.Graph.SetReadOnly(c.Base, false); err != nil {
		return err
	}
	hold, err := c.Graph.Attach("", c.Base, block.Perm{Write: true})
	if err != nil {
		c.restoreBase()
		return err
	}
	c.hold = hold
	if c.Filter {
		f, err := c.Graph.InsertFilter(c.Top, filter.CommitTop, c.FilterName, nil)
		if err != nil {
			c.Clean(j)
			return err
		}
		c.filter = f
	}
	return nil
}

// FilterNode is the job's filter node while it has one.
func (c *Commit) FilterNode() *block.Node { return c.filter }

// Run copies.
func (c *Commit) Run(ctx context.Context, j *Job) error {
	j.Progress(0, c.Top.Length()) // QEMU's len is known from the start
	return engine.Commit(ctx, c.Top, c.Base, c.Unmap, j.engineOptions(c.OnProgress))
}

// Prepare drops the committed images from the chain.
func (c *Commit) Prepare(j *Job) error {
	if c.KeepChain {
		return nil
	}
	return relink(c.Graph, c.overlay, c.Base, c.BackingFile)
}

func (c *Commit) Commit(*Job) {}
func (c *Commit) Abort(*Job)  {}

// Clean gives up write access to Base and reopens it read-only if it was.
func (c *Commit) Clean(*Job) {
	if c.filter != nil {
		// After Prepare the overlay's backing link goes past the
		// filter: nothing uses it any more. After a failure or cancel,
		// the overlay takes Top back.
		c.Graph.RemoveFilter(c.filter)
		c.filter = nil
	}
	if c.hold != nil {
		c.Graph.Detach(c.hold)
		c.hold = nil
	}
	c.restoreBase()
}

func (c *Commit) restoreBase() {
	if c.baseWasRO {
		c.Graph.SetReadOnly(c.Base, true)
	}
}
