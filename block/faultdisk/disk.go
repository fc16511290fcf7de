// Package faultdisk is a protocol driver for tests: a disk held in memory
// whose failures and power losses the test chooses.
//
// A test makes a [Disk], configures it, and puts it into a graph with
// [Disk.Install], which adds a driver of the test's own to that graph
// alone ([block.Graph.AddDriver]); nothing is registered process-wide and
// there is no package-level state, so parallel tests each hold their own
// disks:
//
//	d := faultdisk.Load(imageBytes)
//	d.Install(g, "fault")
//	n, _ := g.Add(block.Options{"driver": "qcow2", "file": block.Options{"driver": "fault"}})
//
// Error injection: [Disk.AddRule] makes chosen operations fail with a
// chosen errno — by kind (read, write, flush, truncate...), by the byte
// range they touch, after N of them, N times — or silently do nothing
// (a lost write, a flush that persists nothing). [Disk.SetSpaceLimit]
// makes writes that need more space than that fail with ENOSPC, as on a
// full file system: space is counted in 4 KiB blocks written, so growing
// a file with truncate costs nothing and punching holes gives space back.
//
// Power loss (powerloss.go): changes stay volatile until a flush
// completes; [Disk.Crash] and a recorded [Journal] make the states a
// power loss can leave — the durable image plus any subset of the pending
// writes, reordered, torn at sectors — for a test to open and judge.
//
// Why power loss and not SIGKILL: a killed process leaves its writes in
// the host's page cache, which survives it, so a kill test passes even
// with fdatasyncs missing. block/qcow2's TestWriteCrash (24 kills of a
// writer) still passes with the fdatasync after the write-back of L2
// tables deleted; TestPowerLoss fails on it within its first hundred crash
// states.
package faultdisk

import (
	"bytes"
	"os"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// blockSize is the allocation unit of the space limit (a file system
// block).
const blockSize = 4096

// Disk is the contents of one "file" and the faults it has. Its methods
// and the driver's IO are safe for concurrent use.
type Disk struct {
	mu    sync.Mutex
	data  []byte   // the contents, as reads see them (the page cache)
	alloc []uint64 // bitmap of 4 KiB blocks holding space
	used  int64    // blocks allocated
	limit int64    // blocks the disk may hold; 0: no limit
	rules []*Rule
	seq   int64
	count map[Kind]int64

	// The power-loss layer (powerloss.go).
	durable []byte   // what stable storage holds; nil: the same as data (nothing pending)
	pending []Change // changes since the last completed flush
	journal *Journal // the history, while recording
}

// New returns an empty disk of size bytes (a sparse file: no space used).
func New(size int64) *Disk {
	d := &Disk{data: make([]byte, size), count: map[Kind]int64{}}
	d.alloc = make([]uint64, (blocks(size)+63)/64)
	return d
}

// Load returns a disk holding a copy of image; blocks of zeroes use no
// space, as after cp --sparse.
func Load(image []byte) *Disk { return Own(slices.Clone(image)) }

// Own is Load without the copy: the disk takes image, which the caller
// must not use any more.
func Own(image []byte) *Disk {
	d := &Disk{data: image, count: map[Kind]int64{}}
	d.alloc = make([]uint64, (blocks(int64(len(image)))+63)/64)
	for b := int64(0); b < blocks(int64(len(image))); b++ {
		if !allZero(d.data[b*blockSize : min((b+1)*blockSize, int64(len(image)))]) {
			d.setAlloc(b)
		}
	}
	return d
}

// LoadFile returns a disk holding a copy of the file at path.
func LoadFile(path string) (*Disk, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Load(b), nil
}

// Bytes returns a copy of the contents as reads see them.
func (d *Disk) Bytes() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.data...)
}

// Size is the disk's length in bytes.
func (d *Disk) Size() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return int64(len(d.data))
}

// Used is the space the disk holds, in bytes (whole 4 KiB blocks).
func (d *Disk) Used() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.used * blockSize
}

// SetSpaceLimit makes writes fail with ENOSPC once the disk would hold
// more than limit bytes (rounded down to 4 KiB blocks); 0 removes the
// limit. Space already held above a new limit stays.
func (d *Disk) SetSpaceLimit(limit int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.limit = limit / blockSize
	if limit > 0 && d.limit == 0 {
		d.limit = -1 // less than one block: nothing fits
	}
}

// AddRule adds a fault; rules are consulted in the order added, and the
// first that fires decides. The disk keeps r: its counters change as
// operations come.
func (d *Disk) AddRule(r *Rule) *Rule {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rules = append(d.rules, r)
	return r
}

// ClearRules removes every fault rule (the space limit stays).
func (d *Disk) ClearRules() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rules = nil
}

// Count is how many operations of kind k the disk has been asked for,
// failed ones included.
func (d *Disk) Count(k Kind) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.count[k]
}

// Seq is how many operations the disk has been asked for, of any kind:
// the Seq the next one gets.
func (d *Disk) Seq() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.seq
}

// admit numbers q and applies the rules to it: a non-nil error fails it;
// drop says to report success and do nothing. d.mu is held.
func (d *Disk) admit(q *Request) (drop bool, err error) {
	q.Seq = d.seq
	d.seq++
	d.count[q.Kind]++
	for _, r := range d.rules {
		if r.decide(*q) {
			if r.Drop {
				return true, nil
			}
			return false, r.err()
		}
	}
	return false, nil
}

// readAt fills p from off; past the end it reads zeroes, as a file does.
func (d *Disk) readAt(p []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := Request{Kind: Read, Off: off, Len: int64(len(p))}
	if _, err := d.admit(&q); err != nil {
		return err
	}
	n := 0
	if off < int64(len(d.data)) {
		n = copy(p, d.data[off:])
	}
	clear(p[n:])
	return nil
}

// writeAt stores p at off (zeroes if p is nil, n bytes), growing the disk
// if it ends past it. punch frees the blocks wholly inside (discard,
// write-zeroes with unmap).
func (d *Disk) writeAt(kind Kind, p []byte, off, n int64, punch bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := Request{Kind: kind, Off: off, Len: n}
	drop, err := d.admit(&q)
	if err != nil || drop {
		return err
	}
	if !punch {
		if err := d.reserve(off, n); err != nil {
			return err
		}
	}
	d.keepDurable()
	d.store(p, off, n, punch)
	d.logWrite(q, p)
	return nil
}

// store changes the contents, with no rule or limit consulted: a write's
// (p, or n zeroes) or a hole's.
func (d *Disk) store(p []byte, off, n int64, punch bool) {
	if end := off + n; end > int64(len(d.data)) {
		d.resize(end)
	}
	if p != nil {
		copy(d.data[off:off+n], p)
	} else {
		clear(d.data[off : off+n])
	}
	first, last := blocks(off), (off+n)/blockSize // blocks wholly inside
	if punch {
		for b := first; b < last; b++ {
			d.clearAlloc(b)
		}
		return
	}
	for b := off / blockSize; b < blocks(off+n); b++ {
		d.setAlloc(b)
	}
}

// reserve fails with ENOSPC if writing [off, off+n) needs more blocks
// than the limit leaves.
func (d *Disk) reserve(off, n int64) error {
	if d.limit == 0 || n == 0 {
		return nil
	}
	need := int64(0)
	for b := off / blockSize; b < blocks(off+n); b++ {
		if !d.isAlloc(b) {
			need++
		}
	}
	if need > 0 && d.used+need > max(d.limit, 0) {
		return unix.ENOSPC
	}
	return nil
}

func (d *Disk) flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := Request{Kind: Flush}
	drop, err := d.admit(&q)
	if err != nil || drop {
		return err
	}
	d.persist(q.Seq)
	return nil
}

func (d *Disk) truncate(size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := int64(len(d.data))
	q := Request{Kind: Truncate, Off: min(old, size), Len: max(old, size) - min(old, size)}
	drop, err := d.admit(&q)
	if err != nil || drop {
		return err
	}
	d.keepDurable()
	d.resize(size)
	d.logTruncate(q, size)
	return nil
}

// resize changes the length; a shrink frees the blocks past the end and
// zeroes what a later growth would show again.
func (d *Disk) resize(size int64) {
	old := int64(len(d.data))
	if size <= old {
		clear(d.data[size:])
		d.data = d.data[:size]
		for b := blocks(size); b < blocks(old); b++ {
			d.clearAlloc(b)
		}
		return
	}
	if size <= int64(cap(d.data)) {
		d.data = d.data[:size]
	} else {
		grown := make([]byte, size, max(size, 2*int64(cap(d.data))))
		copy(grown, d.data)
		d.data = grown
	}
	if need := (blocks(size) + 63) / 64; int64(len(d.alloc)) < need {
		d.alloc = append(d.alloc, make([]uint64, need-int64(len(d.alloc)))...)
	}
}

func blocks(n int64) int64 { return (n + blockSize - 1) / blockSize }

func (d *Disk) isAlloc(b int64) bool {
	return b/64 < int64(len(d.alloc)) && d.alloc[b/64]&(1<<(b%64)) != 0
}

func (d *Disk) setAlloc(b int64) {
	if !d.isAlloc(b) {
		d.alloc[b/64] |= 1 << (b % 64)
		d.used++
	}
}

func (d *Disk) clearAlloc(b int64) {
	if d.isAlloc(b) {
		d.alloc[b/64] &^= 1 << (b % 64)
		d.used--
	}
}

// zeroBlock is never written: allZero compares against it.
var zeroBlock [blockSize]byte

func allZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), blockSize)
		if !bytes.Equal(p[:n], zeroBlock[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}
