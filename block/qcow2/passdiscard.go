package qcow2

// Passing discards down (QEMU's pass-discard-request, -snapshot and
// -other): when a cluster's last reference goes for a reason whose
// option is on, its range in the file is discarded (a hole punched, with
// the file node's discard=unmap, a format's child's default), so that
// the space goes back to the host. Only clusters nothing on disk points
// to any more are discarded: references removed from L2 entries drop at
// write-back, once the removal is durable (writeback.go), and snapshot
// operations drop theirs once the tables without them are.

import (
	"minivmm/block"
)

// discardReason is why a reference goes (QEMU's enum qcow2_discard_type).
// The zero value is "other": table moves, a refcount block dropped, an
// L2 table copied away from a snapshot.
type discardReason uint8

const (
	discardOther    discardReason = iota // pass-discard-other (default off)
	discardNever                         // a copy-on-write's old cluster, a failed allocation given back
	discardAlways                        // a shrink's clusters past the end
	discardRequest                       // guest discards and zero writes (pass-discard-request)
	discardSnapshot                      // snapshot deletion and the like (pass-discard-snapshot)
	numDiscardReasons
)

// passDiscard says for each reason whether freed clusters are discarded.
type passDiscard [numDiscardReasons]bool

// readPassDiscard reads the options with QEMU's defaults: requests are
// passed down iff the node has discard=unmap, snapshots' clusters are,
// others are not.
func readPassDiscard(o block.Options, unmap bool) (passDiscard, error) {
	var p passDiscard
	p[discardAlways] = true
	for _, opt := range []struct {
		key string
		why discardReason
		def bool
	}{
		{"pass-discard-request", discardRequest, unmap},
		{"pass-discard-snapshot", discardSnapshot, true},
		{"pass-discard-other", discardOther, false},
	} {
		on, err := o.Bool(opt.key, opt.def)
		if err != nil {
			return p, err
		}
		p[opt.why] = on
	}
	return p, nil
}

// freed is an entry whose references drop at the next write-back, and
// why they go.
type freed struct {
	e   uint64
	why discardReason
}

// hostRange is a range of the file.
type hostRange struct{ off, n int64 }

// dropped is told that cluster k's last reference went, for why: the
// cluster is discarded in the file if that is passed down, at once or
// (within a batch) with its neighbours at the batch's end.
func (r *refcounts) dropped(k int64, why discardReason) {
	if !r.img.passDiscard[why] {
		return
	}
	cs := r.img.clusterSize
	if !r.batch {
		r.img.discardHost(k*cs, cs)
		return
	}
	if q := r.discards; len(q) > 0 && q[len(q)-1].off+q[len(q)-1].n == k*cs {
		q[len(q)-1].n += cs
		return
	}
	r.discards = append(r.discards, hostRange{k * cs, cs})
}

// batchDiscards starts a batch of frees whose discards go down together,
// ended by the function it returns. A cluster allocated within one has
// the queue go down first (set), so that no queued discard hits a new
// owner's data.
func (r *refcounts) batchDiscards() (end func()) {
	r.batch = true
	return func() {
		r.batch = false
		r.flushDiscards()
	}
}

// flushDiscards passes down the discards queued.
func (r *refcounts) flushDiscards() {
	q := r.discards
	r.discards = nil
	for _, d := range q {
		r.img.discardHost(d.off, d.n)
	}
}

// discardHost discards a range of the file that nothing uses any more.
// Best effort, as in QEMU: a discard is advice, and a failed one leaves
// the space merely allocated.
func (img *image) discardHost(off, n int64) {
	if end := img.file.Length(); off+n > end {
		n = end - off
	}
	if n > 0 {
		_ = img.file.Discard(off, n)
	}
}

// discardDataFor is discardHost in the data file, for the data clusters of
// entries an image with one drops (they have no refcounts: the entries'
// removal is their last reference).
func (img *image) discardDataFor(old []uint64, why discardReason) {
	if !img.passDiscard[why] {
		return
	}
	cs := img.clusterSize
	for _, e := range old {
		if e&flagCompressed != 0 || !img.mapsHost(e) { // (offset 0 is a data file's first cluster)
			continue
		}
		off := int64(e & offsetMask)
		if end := img.data.Length(); off < end {
			_ = img.data.Discard(off, min(cs, end-off))
		}
	}
}
