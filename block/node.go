package block

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"minivmm/block/objects"
	"minivmm/qemuopen"
)

// Node is one node of the graph. Its IO methods are safe for concurrent
// use; they hold the node's lock for reading, which a reopen's commit
// takes for writing, so a request never sees half a reopen.
type Node struct {
	g        *Graph
	name     string
	implicit bool // created inline as another node's child
	drv      *Driver
	opts     Options // in force: as given, with what an inline child inherits
	own      Options // as given (for an inline child, before inheriting)

	mu    sync.RWMutex
	img   Image
	state nodeState
	// held: a Hold keeps the node drained (under g.mu; pivot.go).
	held bool
	// rw: the driver holds write access now (it was opened or last
	// reopened writable); changes under g.mu and mu.
	rw bool

	length atomic.Int64
	// limited: the node has a request alignment or a transfer limit, so
	// requests must check limits (beside length: the check that every
	// request makes costs no other cache line when it has none).
	limited atomic.Bool
	writers atomic.Int32 // users holding write permission
	// sharedWriters of them let others write too (under g.mu).
	sharedWriters int32
	// writeBackFailed: the last writer's leaving failed to write back
	// what the image held, and no writer came since (under g.mu). The
	// failure was reported then; closing the node is no news.
	writeBackFailed bool

	// writeGen counts completed writes; flushedGen is the writeGen the
	// last successful flush covered. Equal: nothing to flush (QEMU's rule
	// too), which keeps a reopen to read-only from paying an fdatasync
	// for nothing. flushMu runs flushes one at a time.
	writeGen   atomic.Uint64
	flushedGen atomic.Uint64
	flushMu    sync.Mutex

	gate   gate       // requests in flight, drained sections, closed
	serial serialiser // writes held against a job's copies (serialise.go)

	// limits are what requests must look like when they reach the
	// driver (limits.go); nil: the defaults. Replaced whole on a reopen.
	limits atomic.Pointer[Limits]
	// sink is the driver, if it hears events (a blkdebug): the generic
	// layer's own events go to it (rmw.go).
	sink EventSink

	// dirty is the bitmaps completed writes mark (dirty.go); nil: none.
	dirty   atomic.Pointer[dirtySet]
	dirtyMu sync.Mutex // serializes changes to dirty

	// children changes under g.mu and n.mu (so that IO and queries may read
	// it under n.mu alone); parents and users under g.mu.
	children map[string]*Node
	parents  map[*Node]string // parent -> the child name it uses us by
	users    []*Backend

	// perm and shared are what the node's parents and users need of it
	// and let others do, as its driver holds them (under g.mu). attached
	// says when each parent took it as a child, which orders its users as
	// QEMU lists them (newest first) in a conflict.
	perm, shared Perms
	attached     map[*Node]uint64
	filter       bool // a job's filter node (filter.go)
}

// nodeState is the generic options in force on a node.
type nodeState struct {
	readOnly     bool
	autoReadOnly bool
	direct       bool
	noFlush      bool
	forceShare   bool
	discard      string // "ignore" | "unmap"
	detectZeroes string // "off" | "on" | "unmap"
}

// writableFor is whether the driver should hold write access when its
// parents and users need perm of it: read-write nodes always,
// auto-read-only ones only while something takes a permission that
// writes (QEMU's file-posix with dynamic auto-read-only: raw_parse_flags
// reopens read-write when write, write-unchanged or resize is taken).
// A read-write format takes write on its file child whether or not
// anyone writes through it (StoragePerms), so its file is held O_RDWR
// from the moment the format is added, as in QEMU.
func (s nodeState) writableFor(perm Perms) bool {
	return !s.readOnly && (!s.autoReadOnly || perm&(PermWrite|PermWriteUnchanged|PermResize) != 0)
}

// OpenContext is what a driver's Open gets.
type OpenContext struct {
	NodeName string
	// Options are the driver's own options, checked against its schema.
	Options Options
	// Writable: open for writing. Direct: O_DIRECT. NoFlush: ignore flushes.
	// Unmap: discard=unmap (a format's default for passing discards down).
	Writable bool
	Direct   bool
	NoFlush  bool
	Unmap    bool
	// Files is where every open goes (qemu_open).
	Files *qemuopen.Registry
	// Objects are the process's -object/object-add objects (nil: none).
	Objects  *objects.Registry
	children map[string]*Node

	g          *Graph
	parentOpts Options
	created    *[]*Node // inline children, removed if the open fails
	// headerChild are options given for the backing child without a
	// driver: they go over those OpenChild("backing") is given.
	headerChild Options
}

// Child returns the child node a format driver reads through.
func (o *OpenContext) Child(name string) *Node { return o.children[name] }

// ReportCorruption tells the graph's listener (the monitor's
// BLOCK_IMAGE_CORRUPTED) that this node's image is corrupt; a driver keeps
// the function and calls it when it finds out, at any time.
func (o *OpenContext) ReportCorruption() func(msg string, offset, size int64, fatal bool) {
	g, node := o.g, o.NodeName
	return func(msg string, offset, size int64, fatal bool) {
		g.ReportCorruption(Corruption{Node: node, Msg: msg, Offset: offset, Size: size, Fatal: fatal})
	}
}

// EnterChain records that the image named key is opening its backing
// chain, for as long as the open takes (the graph's lock is held
// throughout): an image met again further down the same chain is refused
// instead of recursing forever, and so is a chain deeper than maxDepth.
func (o *OpenContext) EnterChain(key string, maxDepth int) (leave func(), err error) {
	g := o.g
	if slices.Contains(g.chain, key) {
		return nil, fmt.Errorf("Backing file chain of '%s' loops back to it", key)
	}
	if len(g.chain) >= maxDepth {
		return nil, fmt.Errorf("Backing file chain of '%s' is more than %d images deep", key, maxDepth)
	}
	g.chain = append(g.chain, key)
	return func() { g.chain = g.chain[:len(g.chain)-1] }, nil
}

// BackingOptions are the options given for the backing file the image
// names (completing it: "backing.driver=raw"), or nil.
func (o *OpenContext) BackingOptions() Options { return o.headerChild }

// OpenChild opens a child the image itself names (a backing file from a
// qcow2 header) as an inline node in role ("backing"), with opts and the
// generic options it inherits from this node. It is closed with this node,
// or at once if this node's Open fails.
func (o *OpenContext) OpenChild(role string, opts Options) (*Node, error) {
	if o.children[role] != nil {
		return nil, fmt.Errorf("node '%s' already has a '%s' child", o.NodeName, role)
	}
	if role == "backing" && o.headerChild != nil {
		opts = mergeOptions(opts.Clone(), o.headerChild)
	}
	parent := o.parentOpts
	if role != "backing" { // a format's data file: as its file (childParent)
		parent = parent.Clone()
		parent["discard"] = "unmap"
	}
	c, err := o.g.add(opts, parent, true)
	if err != nil {
		return nil, err
	}
	*o.created = append(*o.created, c)
	o.children[role] = c
	return c, nil
}

// ReopenRequest is what a driver's PrepareReopen gets.
type ReopenRequest struct {
	Writable bool
	Direct   bool
	NoFlush  bool
	Unmap    bool // discard=unmap
	Options  Options
	Files    *qemuopen.Registry

	// Children are the node's children after the reopen, by role
	// ("file", "backing"); a role missing has no child.
	Children map[string]*Node
	// Perm and Shared are what the node's parents and users need of it
	// after the reopen and let others do (see PermSetter): a driver that
	// holds them takes them in the same transaction.
	Perm, Shared Perms
}

// Name is the node-name.
func (n *Node) Name() string { return n.name }

// Driver is the node's driver name.
func (n *Node) Driver() string { return n.drv.Name }

// Child returns a named child ("file", "backing"), or nil.
func (n *Node) Child(name string) *Node {
	n.g.mu.Lock()
	defer n.g.mu.Unlock()
	return n.children[name]
}

// Backing is the node's backing child (nil: none), read under the node's
// own lock rather than the graph's (Child), so that a request may follow
// the chain while a graph change holds the graph's lock and waits for
// requests to drain.
func (n *Node) Backing() *Node {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.children["backing"]
}

// ReadOnly reports the node's read-only option.
func (n *Node) ReadOnly() bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.state.readOnly
}

// Length is the node's size in bytes.
func (n *Node) Length() int64 { return n.length.Load() }

func (n *Node) fail(op string, off, length int64, err error) error {
	var be *Error
	if errors.As(err, &be) {
		return err // already names the node where it happened
	}
	return &Error{Node: n.name, Op: op, Off: off, Len: length, Err: err}
}

func (n *Node) check(op string, off, length int64) error {
	if off < 0 || length < 0 || off > n.length.Load()-length {
		return &Error{Node: n.name, Op: op, Off: off, Len: length, Err: unix.EIO}
	}
	return nil
}

func (n *Node) checkWrite(op string, off, length int64) error {
	if err := n.check(op, off, length); err != nil {
		return err
	}
	if n.writers.Load() == 0 {
		return &Error{Node: n.name, Op: op, Off: off, Len: length, Err: unix.EPERM}
	}
	return nil
}

// ReadAt reads len(p) bytes at off; a short read is an error.
func (n *Node) ReadAt(p []byte, off int64) (int, error) {
	if err := n.check("read", off, int64(len(p))); err != nil {
		return 0, err
	}
	if n.limited.Load() && n.limitsNow().slowRead(off, int64(len(p))) {
		return n.readSlow([][]byte{p}, off)
	}
	if err := n.gate.enter(); err != nil {
		return 0, n.fail("read", off, int64(len(p)), err)
	}
	defer n.gate.leave()
	n.mu.RLock()
	c, err := n.img.ReadAt(p, off)
	n.mu.RUnlock()
	if err != nil {
		return c, n.fail("read", off, int64(len(p)), err)
	}
	return c, nil
}

// WriteAt writes p at off. The caller must hold write permission (a
// [Backend] attached for writing, or a writing parent).
func (n *Node) WriteAt(p []byte, off int64) (int, error) {
	return n.write(p, nil, off, 0)
}

// WriteZeroes makes [off, off+length) read as zeroes; with unmap (and the
// node's discard=unmap) it may deallocate.
func (n *Node) WriteZeroes(off, length int64, unmap bool) error {
	return n.WriteZeroesFlags(off, length, unmap, 0)
}

// WriteZeroesFlags is WriteZeroes with write flags: [Serialised] for the
// holder of a [Node.SerialiseRange] over it (a copy-on-read of zeroes).
func (n *Node) WriteZeroesFlags(off, length int64, unmap bool, flags WriteFlags) error {
	if err := n.checkWrite("write-zeroes", off, length); err != nil {
		return err
	}
	if n.limitsNow().misaligned(off, length) {
		if _, ok, err := n.writePadded(nil, off, length, flags, true, unmap); ok {
			return err
		}
		return n.WriteZeroesFlags(off, length, unmap, flags)
	}
	if flags&Serialised == 0 {
		defer n.serial.writeBegin(off, length)()
	}
	flags &^= Serialised
	if err := n.gate.enter(); err != nil {
		return n.fail("write-zeroes", off, length, err)
	}
	defer n.gate.leave()
	defer n.writeDone()
	defer n.markDirty(off, length)
	n.mu.RLock()
	err := n.alignedZeroLocked(off, length, unmap, flags)
	n.mu.RUnlock()
	if err != nil {
		return n.fail("write-zeroes", off, length, err)
	}
	return nil
}

// writeDone counts a write that has completed, successfully or not (QEMU's
// bdrv_co_write_req_finish): a flush that starts after this covers it; one
// that started before it does not, even if the write had begun.
func (n *Node) writeDone() { n.writeGen.Add(1) }

var zeroBuf = make([]byte, 1<<20)

// Discard tells the node the range is no longer needed; with
// discard=ignore it does nothing.
func (n *Node) Discard(off, length int64) error {
	if err := n.checkWrite("discard", off, length); err != nil {
		return err
	}
	defer n.serial.writeBegin(off, length)()
	if err := n.gate.enter(); err != nil {
		return n.fail("discard", off, length, err)
	}
	defer n.gate.leave()
	defer n.writeDone()
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.state.discard != "unmap" {
		return nil // changes nothing, so marks no bitmap (as in QEMU)
	}
	defer n.markDirty(off, length)
	d, ok := n.img.(Discarder)
	if !ok {
		return nil
	}
	if err := n.discardLocked(d, off, length); err != nil {
		return n.fail("discard", off, length, err)
	}
	return nil
}

// Flush makes completed writes durable, unless cache.no-flush; with no
// write completed since the last flush there is nothing to do. Flushes
// run one at a time, in order (QEMU's bdrv_co_flush): each covers the
// writes completed when it started, and the generation it records only
// grows.
func (n *Node) Flush() error {
	if err := n.gate.enter(); err != nil {
		return n.fail("flush", 0, 0, err)
	}
	defer n.gate.leave()
	return n.flush()
}

// flush is Flush for a request already admitted, or for the graph in a
// drained section of n.
func (n *Node) flush() error {
	n.flushMu.Lock()
	defer n.flushMu.Unlock()
	gen := n.writeGen.Load()
	if gen == n.flushedGen.Load() {
		return nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.state.noFlush {
		return nil
	}
	if err := n.img.Flush(); err != nil {
		return n.fail("flush", 0, 0, err)
	}
	n.flushedGen.Store(gen)
	return nil
}

// BlockStatus describes the range at off: its status and how many bytes
// (at most length) share it. Drivers without block status report data.
func (n *Node) BlockStatus(off, length int64) (Status, int64, error) {
	if err := n.check("block-status", off, length); err != nil {
		return Status{}, 0, err
	}
	if err := n.gate.enter(); err != nil {
		return Status{}, 0, n.fail("block-status", off, length, err)
	}
	defer n.gate.leave()
	n.mu.RLock()
	defer n.mu.RUnlock()
	bs, ok := n.img.(BlockStatuser)
	if !ok {
		return Status{Data: true, Allocated: true, Offset: -1}, length, nil
	}
	st, l, err := bs.BlockStatus(off, length)
	if err != nil {
		return st, l, n.fail("block-status", off, length, err)
	}
	return st, l, nil
}

// Truncate resizes the node.
func (n *Node) Truncate(size int64) error {
	if err := n.checkWrite("truncate", 0, 0); err != nil {
		return err
	}
	if err := n.gate.enter(); err != nil {
		return n.fail("truncate", size, 0, err)
	}
	defer n.gate.leave()
	defer n.writeDone()
	// Only formats with backing files look for one: protocol nodes are
	// truncated with the graph's lock held (a qcow2 image trimming its
	// file on close), which Child takes.
	zt, zeroing := n.img.(ZeroingTruncater)
	var backing *Node
	if zeroing {
		backing = n.Child("backing")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.img.(Truncater)
	if !ok {
		return n.fail("truncate", size, 0, ErrNotSupported)
	}
	// As QEMU's bdrv_co_truncate: where the backing file is longer than
	// the node, growing must zero the new area, or the backing file's
	// data would show through.
	if old := n.length.Load(); size > old && backing != nil && backing.Length() > old {
		if err := zt.TruncateZeroed(size); err != nil {
			return n.fail("truncate", size, 0, err)
		}
	} else if err := t.Truncate(size); err != nil {
		return n.fail("truncate", size, 0, err)
	}
	n.length.Store(roundToSector(size))
	return nil
}

func allZero(p []byte) bool {
	for len(p) >= 8 {
		if p[0]|p[1]|p[2]|p[3]|p[4]|p[5]|p[6]|p[7] != 0 {
			return false
		}
		p = p[8:]
	}
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// Filenamer is a driver that can name what it opened, for queries
// (QEMU's bs->filename).
type Filenamer interface {
	Filename() string
}

// ExactFilenamer is a driver that can name what it opened from options
// other than a filename (QEMU's bdrv_refresh_filename's exact_filename:
// an NBD server's URL); ok false: only a json: description names it.
type ExactFilenamer interface {
	ExactFilename() (name string, ok bool)
}

// ActualSizer reports the bytes a node's image occupies on the host.
type ActualSizer interface {
	ActualSize() (int64, error)
}

// DirtyFlagger is a format that keeps a dirty flag in its image
// (query-named-block-nodes shows "dirty-flag" only for those that can
// say).
type DirtyFlagger interface {
	DirtyFlag() bool
}

// Info is what queries show of a node (query-named-block-nodes).
type Info struct {
	Name         string
	Driver       string
	Filename     string
	ReadOnly     bool
	Direct       bool
	NoFlush      bool
	DetectZeroes string
	Length       int64
	ActualSize   int64 // -1: unknown
	DirtyFlag    *bool // nil: the format has none
	// BackingDepth is how many images lie below this one in its backing
	// chain (QEMU's backing_file_depth): 0 for a node without backing.
	BackingDepth int
}

// Info describes the node now.
func (n *Node) Info() Info {
	n.mu.RLock()
	defer n.mu.RUnlock()
	info := Info{
		Name: n.name, Driver: n.drv.Name, ReadOnly: n.state.readOnly, Direct: n.state.direct,
		NoFlush: n.state.noFlush, DetectZeroes: n.state.detectZeroes, Length: n.length.Load(), ActualSize: -1,
	}
	info.Filename = n.filenameLocked()
	for b := n.children["backing"]; b != nil && info.BackingDepth < maxGraphDepth; {
		info.BackingDepth++
		b.mu.RLock()
		next := b.children["backing"]
		b.mu.RUnlock()
		b = next
	}
	if n.gate.isClosed() {
		// The driver's fds are gone (their numbers may be another
		// image's by now): say nothing it would have to look up.
		return info
	}
	if d, ok := n.img.(DirtyFlagger); ok {
		dirty := d.DirtyFlag()
		info.DirtyFlag = &dirty
	}
	if a, ok := n.img.(ActualSizer); ok {
		if size, err := a.ActualSize(); err == nil {
			info.ActualSize = size
		}
	}
	return info
}

// Filename names what the node opened: a plain filename, or QEMU's
// "json:{...}" where a filename cannot describe the node.
func (n *Node) Filename() string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.filenameLocked()
}

func (n *Node) filenameLocked() string {
	if f, ok := n.img.(Filenamer); ok && n.plainFilename() {
		// A child that only a json: description names (a quorum) does
		// not name this node: QEMU describes the node itself then.
		if name := f.Filename(); !strings.HasPrefix(name, "json:") {
			return name
		}
	}
	if f, ok := n.img.(ExactFilenamer); ok {
		if name, ok := f.ExactFilename(); ok {
			return name
		}
	}
	data, _ := json.Marshal(n.describeLocked())
	return "json:" + string(data)
}

// plainFilename: the node's driver options say no more than a filename,
// so the filename alone describes it (QEMU's bdrv_refresh_filename rule).
func (n *Node) plainFilename() bool {
	for k := range n.drv.Options {
		if _, given := n.opts[k]; given && k != "filename" && !slices.Contains(n.drv.Weak, k) {
			return false
		}
	}
	return true
}

// describeLocked gives a node's driver, driver options and children, for
// a json: filename. n.mu is held; children's locks are taken parent first,
// the order the IO path takes them in.
func (n *Node) describeLocked() map[string]any {
	d := map[string]any{"driver": n.drv.Name}
	for k := range n.drv.Options {
		if v, given := n.opts[k]; given && !slices.Contains(n.drv.Weak, k) {
			d[k] = v
		}
	}
	for key, c := range n.children {
		if c.implicit {
			c.mu.RLock()
			d[key] = c.describeLocked()
			c.mu.RUnlock()
		} else {
			d[key] = c.name
		}
	}
	listChildren(d)
	return d
}

// Image is the node's driver, for callers that ask it for an optional
// interface of their own (a tool's format-specific report); IO must go
// through the node's methods.
func (n *Node) Image() Image {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.img
}
