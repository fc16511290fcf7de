package jobs

import (
	"context"

	"minivmm/block"
	"minivmm/block/engine"
	"minivmm/block/filter"
)

// Stream is block-stream (QEMU's stream job): what the images between
// Top and Base (nil: the whole chain) hold is copied into Top, then Base
// becomes Top's backing file. Writes to Top go on meanwhile: the copy
// serialises against them (block/serialise.go). A read-only Top is made
// read-write for the job and read-only again after.
type Stream struct {
	Graph     *block.Graph
	Top, Base *block.Node
	// BackingFile is the name written in Top's header for Base ("":
	// Base's filename).
	BackingFile string
	// Filter: put QEMU's copy-on-read filter node above Top while the
	// job runs (block-stream), named FilterName ("": a generated name).
	// Its reads copy what the job would (its bottom is the node above
	// Base).
	Filter     bool
	FilterName string

	filter    *block.Node
	topWasRO  bool
	hold      *block.Backend
	endSerial func()
}

// Setup makes Top writable and serialising.
func (s *Stream) Setup(j *Job) error {
	s.topWasRO = s.Top.ReadOnly()
	if err := s.Graph.SetReadOnly(s.Top, false); err != nil {
		return err
	}
	if s.Top.Writers() == 0 {
		hold, err := s.Graph.Attach("", s.Top, block.Perm{Write: true, ShareWrite: true})
		if err != nil {
			s.restore()
			return err
		}
		s.hold = hold
	}
	s.endSerial = s.Top.Serialise()
	if s.Filter {
		// QEMU's stream gives its filter the node above the base as
		// bottom: a guest's reads copy up what the stream will.
		f, err := s.Graph.InsertFilter(s.Top, filter.CopyOnRead, s.FilterName,
			block.Options{"bottom": s.baseOverlay().Name()})
		if err != nil {
			s.Clean(j)
			return err
		}
		s.filter = f
		// The job's own node in QEMU (its block_job_create's bs): busy.
		j.AddNode(f.Name())
	}
	return nil
}

// baseOverlay is the lowest node of Top's chain above Base (the chain's
// last image when Base is nil).
func (s *Stream) baseOverlay() *block.Node {
	n := s.Top
	for {
		next := n.Child("backing")
		if next == nil || next == s.Base {
			return n
		}
		n = next
	}
}

// Run copies.
func (s *Stream) Run(ctx context.Context, j *Job) error {
	j.Progress(0, s.Top.Length())
	return engine.Stream(ctx, s.Top, s.Base, j.engineOptions(nil))
}

// Prepare drops the streamed images from the chain.
func (s *Stream) Prepare(j *Job) error {
	return relink(s.Graph, s.Top, s.Base, s.BackingFile)
}

func (s *Stream) Commit(*Job) {}
func (s *Stream) Abort(*Job)  {}

// Clean ends the serialising and the job's write access.
func (s *Stream) Clean(*Job) {
	if s.filter != nil {
		s.Graph.RemoveFilter(s.filter)
		s.filter = nil
	}
	if s.endSerial != nil {
		s.endSerial()
		s.endSerial = nil
	}
	s.restore()
}

func (s *Stream) restore() {
	if s.hold != nil {
		s.Graph.Detach(s.hold)
		s.hold = nil
	}
	if s.topWasRO {
		s.Graph.SetReadOnly(s.Top, true)
	}
}
