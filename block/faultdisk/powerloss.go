package faultdisk

// Power loss, in the spirit of dm-log-writes: every change a disk takes
// (write, write-zeroes, discard, truncate) lands at once in what reads see
// — the page cache — but stays volatile, kept in order in a list of
// pending changes, until a flush completes; only then is it applied to the
// durable image. A power loss keeps the durable image plus any subset of
// the pending changes, reached in any order, each write possibly torn at
// 512-byte sectors: a crash state. [Disk.Crash] makes one now; a
// [Journal] records a whole run so that a test can make them afterwards
// at every flush of it ([Journal.CrashPoints]).
//
// A truncate is volatile too: on Linux a size change is inode metadata
// that only fsync/fdatasync makes durable, and a crash before it may lose
// it. In a crash state a truncate is whole or absent, never torn, and
// writes are reordered only among themselves between truncates: a write
// issued after a truncate went to the file as the truncate left it, so
// moving it before the truncate would make states no crash can leave (a
// shrink cutting off data written after it). A write kept past the end of
// the file extends it, as the write itself would have.

import (
	"math/rand/v2"
	"slices"
)

// SectorSize is the unit a write tears at: a disk persists whole sectors.
const SectorSize = 512

// Change is one change a disk took that may or may not survive a power
// loss.
type Change struct {
	Seq  int64 // the operation's Request.Seq
	Kind Kind  // Write, WriteZeroes, Discard or Truncate
	Off  int64 // a truncate: the new size
	Len  int64 // a truncate: 0
	Data []byte
}

func (c Change) end() int64 { return c.Off + c.Len }

// logWrite records a write (p nil: zeroes) as pending. d.mu is held.
func (d *Disk) logWrite(q Request, p []byte) {
	c := Change{Seq: q.Seq, Kind: q.Kind, Off: q.Off, Len: q.Len}
	if p != nil {
		c.Data = slices.Clone(p)
	}
	d.logChange(c)
}

// logTruncate records a size change as pending. d.mu is held.
func (d *Disk) logTruncate(q Request, size int64) {
	d.logChange(Change{Seq: q.Seq, Kind: Truncate, Off: size})
}

func (d *Disk) logChange(c Change) {
	d.pending = append(d.pending, c)
	if d.journal != nil {
		d.journal.Ops = append(d.journal.Ops, c)
	}
}

// keepDurable separates the durable image from the contents before they
// first change. d.mu is held.
func (d *Disk) keepDurable() {
	if d.durable == nil {
		d.durable = slices.Clone(d.data)
	}
}

// stable is the durable image. d.mu is held.
func (d *Disk) stable() []byte {
	if d.durable == nil {
		return d.data
	}
	return d.durable
}

// persist makes every pending change durable (a flush completed). d.mu
// is held.
func (d *Disk) persist(seq int64) {
	for _, c := range d.pending {
		d.durable = apply(d.durable, c, c.Off, c.end())
	}
	d.pending = d.pending[:0]
	if d.journal != nil {
		d.journal.Ops = append(d.journal.Ops, Change{Seq: seq, Kind: Flush})
	}
}

// Durable returns a copy of what a power loss now would keep for sure.
func (d *Disk) Durable() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.stable())
}

// Pending returns the changes since the last completed flush, in order.
func (d *Disk) Pending() []Change {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.pending)
}

// Crash returns the crash state of a power loss now that keeps pieces of
// the pending changes ([Disk.Pending]), reaching the disk in that order;
// nil keeps none of them.
func (d *Disk) Crash(pieces []Piece) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	cp := CrashPoint{Durable: d.stable(), Pending: d.pending}
	return cp.State(nil, pieces)
}

// PowerLoss makes the disk what it would be after a power loss now that
// keeps pieces (see Crash) and a reboot: reads see the crash state, which
// is all durable. The space it holds is counted again from its contents.
func (d *Disk) PowerLoss(pieces []Piece) {
	d.mu.Lock()
	defer d.mu.Unlock()
	cp := CrashPoint{Durable: d.stable(), Pending: d.pending}
	state := cp.State(nil, pieces)
	d.durable, d.pending = nil, nil
	d.data = state
	d.alloc, d.used = make([]uint64, (blocks(int64(len(state)))+63)/64), 0
	for b := int64(0); b < blocks(int64(len(state))); b++ {
		if !allZero(state[b*blockSize : min((b+1)*blockSize, int64(len(state)))]) {
			d.setAlloc(b)
		}
	}
}

// Journal is a disk's history: the durable image when recording began,
// then every change and completed flush since, in order (a flush is a
// Change of Kind Flush). The changes pending when recording began come
// first. A dropped flush ([Rule].Drop) is no flush: it is not recorded.
type Journal struct {
	Base []byte
	Ops  []Change
}

// Record starts a journal of the disk's history, replacing any before.
func (d *Disk) Record() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.journal = &Journal{Base: slices.Clone(d.stable()), Ops: slices.Clone(d.pending)}
}

// Journal returns what has been recorded since Record (nil without it).
// It shares nothing the disk changes later.
func (d *Disk) Journal() *Journal {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.journal == nil {
		return nil
	}
	return &Journal{Base: d.journal.Base, Ops: slices.Clone(d.journal.Ops)}
}

// CrashPoint is a moment a power loss may strike: the durable image and
// the changes pending. Seq is the sequence number of the operation the
// crash strikes before completing (the flush that would have made them
// durable), or the disk's next at the end of a journal.
type CrashPoint struct {
	Durable []byte // shared: not to be modified
	Pending []Change
	Seq     int64
}

// CrashPoints replays j and calls fn at every flush (before it completes:
// everything since the last one pending) and at the end, until fn returns
// false. Every crash state of the recorded run is one of these points'
// states: a power loss between two flushes keeps a subset of the changes
// that the next flush would have made durable. The point is valid only
// during the call.
func (j *Journal) CrashPoints(fn func(*CrashPoint) bool) {
	durable := slices.Clone(j.Base)
	start := 0
	var last int64
	for i, c := range j.Ops {
		last = c.Seq + 1
		if c.Kind != Flush {
			continue
		}
		if i > start && !fn(&CrashPoint{Durable: durable, Pending: j.Ops[start:i], Seq: c.Seq}) {
			return
		}
		for _, p := range j.Ops[start:i] {
			durable = apply(durable, p, p.Off, p.end())
		}
		start = i + 1
	}
	if start < len(j.Ops) {
		fn(&CrashPoint{Durable: durable, Pending: j.Ops[start:], Seq: last})
	}
}

// Piece is a part of a pending change that reaches the disk: Pending[I],
// or of a write only the bytes [Off, End) (a torn write, cut at
// sectors). A truncate is always whole.
type Piece struct {
	I        int
	Off, End int64
}

// Whole is change i of pending, all of it.
func Whole(pending []Change, i int) Piece {
	return Piece{I: i, Off: pending[i].Off, End: pending[i].end()}
}

// Prefix keeps the first n pending changes, whole, in order: a power loss
// that the disk met with its queue drained in order.
func Prefix(pending []Change, n int) []Piece {
	out := make([]Piece, n)
	for i := range out {
		out[i] = Whole(pending, i)
	}
	return out
}

// Random picks a random crash state: each change kept with probability
// keep, a kept write torn (a random subset of its sectors) with
// probability tear, and the kept writes shuffled between truncates.
func Random(r *rand.Rand, pending []Change, keep, tear float64) []Piece {
	var out []Piece
	seg := 0 // where the writes since the last truncate start in out
	for i, c := range pending {
		if r.Float64() >= keep {
			continue
		}
		if c.Kind == Truncate {
			shuffle(r, out[seg:])
			out = append(out, Whole(pending, i))
			seg = len(out)
			continue
		}
		if r.Float64() >= tear || c.Len <= SectorSize {
			out = append(out, Whole(pending, i))
			continue
		}
		out = append(out, tornPieces(r, pending, i)...)
	}
	shuffle(r, out[seg:])
	return out
}

func shuffle(r *rand.Rand, p []Piece) {
	r.Shuffle(len(p), func(a, b int) { p[a], p[b] = p[b], p[a] })
}

// tornPieces keeps a random subset of the sectors of write i, as runs.
func tornPieces(r *rand.Rand, pending []Change, i int) []Piece {
	c := pending[i]
	var out []Piece
	for off := c.Off; off < c.end(); {
		next := min((off/SectorSize+1)*SectorSize, c.end())
		if r.IntN(2) == 0 {
			if n := len(out); n > 0 && out[n-1].End == off {
				out[n-1].End = next
			} else {
				out = append(out, Piece{I: i, Off: off, End: next})
			}
		}
		off = next
	}
	return out
}

// State returns the crash state that keeps pieces, in that order, built
// in buf (reused if large enough).
func (cp *CrashPoint) State(buf []byte, pieces []Piece) []byte {
	state := append(buf[:0], cp.Durable...)
	for _, p := range pieces {
		state = apply(state, cp.Pending[p.I], p.Off, p.End)
	}
	return state
}

// Earliest is the first Seq at which a power loss can leave pieces: just
// after the last of the changes they come from.
func (cp *CrashPoint) Earliest(pieces []Piece) int64 {
	seq := int64(-1)
	for _, p := range pieces {
		seq = max(seq, cp.Pending[p.I].Seq)
	}
	if seq < 0 && len(cp.Pending) > 0 {
		return cp.Pending[0].Seq
	}
	return seq + 1
}

// apply makes img hold bytes [off, end) of change c (all of a truncate).
func apply(img []byte, c Change, off, end int64) []byte {
	if c.Kind == Truncate {
		return resizeBytes(img, c.Off)
	}
	if end > int64(len(img)) {
		img = resizeBytes(img, end)
	}
	if c.Data != nil {
		copy(img[off:end], c.Data[off-c.Off:end-c.Off])
	} else {
		clear(img[off:end])
	}
	return img
}

func resizeBytes(img []byte, size int64) []byte {
	if size <= int64(len(img)) {
		return img[:size]
	}
	if size <= int64(cap(img)) {
		n := len(img)
		img = img[:size]
		clear(img[n:])
		return img
	}
	return append(img, make([]byte, size-int64(len(img)))...)
}
