// Package block is minivmm's block layer: a graph of named nodes, each an
// image format or protocol driver over its children, opened through
// qemuopen so that /dev/fdset/N works everywhere, and reopened in
// transactions.
//
// A driver implements [Image], the small interface every node has, and any
// of the optional ones ([ZeroWriter], [Discarder], [BlockStatuser],
// [Truncater], [Reopener], [VectorReader], [VectorWriter]) that the graph
// asks for by type assertion and falls back from, the way io.Copy asks
// for io.WriterTo.
//
// Every request on a [Node] is counted in flight and passes the node's
// gate: [Node.Drain] and [Graph.Drain] hold new requests back and wait
// for those in flight, and a closed node fails them with [ErrClosed].
package block

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Image is an open node's driver: io.ReaderAt/io.WriterAt over the node's
// virtual disk, plus flush, length and close. Offsets and lengths have
// been checked against Length by the graph before a driver sees them.
type Image interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Flush() error
	Length() (int64, error)
	Close() error
}

// ZeroWriter writes zeroes without a buffer; unmap allows deallocating.
type ZeroWriter interface {
	WriteZeroes(off, n int64, unmap bool) error
}

// Discarder drops data the guest no longer needs.
type Discarder interface {
	Discard(off, n int64) error
}

// Status is what BlockStatus says of a range.
type Status struct {
	Data      bool  // allocated with data at this layer or below
	Zero      bool  // reads as zeroes
	Allocated bool  // allocated at this node (not from a backing file)
	Depth     int   // in a backing chain, how far down the data lives
	Offset    int64 // host offset in the file child, or -1
}

// BlockStatuser tells which ranges hold data. It returns the status of
// the range starting at off and how many bytes (at most n) share it.
type BlockStatuser interface {
	BlockStatus(off, n int64) (Status, int64, error)
}

// Truncater changes a node's length.
type Truncater interface {
	Truncate(size int64) error
}

// ZeroingTruncater is a Truncater that can also make the area a grow
// adds read as zeroes whatever its backing file holds there (QEMU's
// truncate with BDRV_REQ_ZERO_WRITE). The graph asks for it where the
// backing file is longer than the node: left unallocated, the new area
// would show the backing file's data.
type ZeroingTruncater interface {
	TruncateZeroed(size int64) error
}

// Reopener changes a driver's open state in a transaction: Prepare does
// everything that can fail (opening new fds) without changing what is
// observable; the returned Pending then commits or aborts. A format
// driver reads its children from the request (they may be other nodes
// than at open: blockdev-reopen can change "file" and "backing") and
// switches to them at Commit; it refuses a change it cannot make with
// QEMU's "Cannot change the option 'file'". Only a Reopener's children
// can change.
type Reopener interface {
	PrepareReopen(r *ReopenRequest) (Pending, error)
}

// WriterDropper is a driver that keeps writes in memory (metadata written
// back lazily) and must put them on its children before it loses the
// right to write them. The graph calls DropWriter when a node's last
// writer goes, while the node's file child is still writable.
type WriterDropper interface {
	DropWriter() error
}

// BackingNamer is a format whose image names a backing file (a qcow2
// header): a reopen must then say what the node's backing is.
type BackingNamer interface {
	BackingFile() string
}

// Pending is a prepared reopen of one driver.
type Pending interface {
	Commit()
	Abort()
}

// Driver describes one block driver.
type Driver struct {
	Name string
	// Format is true for drivers that interpret a child "file" (raw,
	// qcow2); false for protocol drivers (file, null-co).
	Format bool
	// Probe scores how surely header (the first bytes of an image) and
	// filename belong to this format: 0 is "not mine". Nil: never probed.
	Probe func(header []byte, filename string) int
	// Options lists the driver's own options and their types, beyond the
	// generic ones every node has.
	Options map[string]OptType
	// Required lists the driver's options a node must be given.
	Required []string
	// Reopenable lists the driver's options a reopen may change: its
	// PrepareReopen checks them and applies them. Any other option given
	// with another value is refused ("Cannot change the option").
	Reopenable []string
	// JoinOptions, if set, drops from old (the options a node has) what
	// options given to a reopen override beyond their own keys (QEMU's
	// bdrv_join_options: a new cache-size overrides the old L2 and
	// refcount sizes); after the join, fix adjusts the result.
	JoinOptions func(given, old Options) (fix func(joined Options))
	// Weak lists options that change how, not what, the node reads
	// (options outside QEMU's strong_runtime_opts, such as the file
	// driver's locking): given with a filename alone, the filename still
	// describes the node.
	Weak []string
	// Prefixes are the filename prefixes ("nbd://") that name this
	// protocol driver (QEMU's protocol_name): such a filename opens with
	// it rather than as a file.
	Prefixes []string
	// Open opens a node. On error it must leave nothing open.
	Open func(o *OpenContext) (Image, error)
	// ChildPerm is what a format needs of its children; nil:
	// DefaultChildPerm.
	ChildPerm ChildPermFunc
	// Filtered names the child a filter driver passes requests to
	// ("image" for blkdebug); "" for drivers that are no filters.
	Filtered string

	// The schema is built once: every add and reopen consults it.
	schemaOnce sync.Once
	schemaMap  map[string]OptType
	childKeys  []string // the schema's OptChild keys, sorted
}

var (
	driversMu sync.RWMutex
	drivers   = map[string]*Driver{}
)

// Register makes a driver available by name; drivers call it from init.
func Register(d *Driver) {
	driversMu.Lock()
	defer driversMu.Unlock()
	if _, dup := drivers[d.Name]; dup {
		panic("block: Register called twice for driver " + d.Name)
	}
	drivers[d.Name] = d
}

// ProtocolFor names the protocol driver a filename opens with: the one
// whose prefix it has (bdrv_find_protocol), else "file".
func ProtocolFor(filename string) string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	for _, d := range drivers {
		for _, p := range d.Prefixes {
			if strings.HasPrefix(filename, p) {
				return d.Name
			}
		}
	}
	return "file"
}

// LookupDriver finds a driver by name.
func LookupDriver(name string) (*Driver, bool) {
	driversMu.RLock()
	defer driversMu.RUnlock()
	d, ok := drivers[name]
	return d, ok
}

// Drivers lists the registered drivers' names, sorted.
func Drivers() []string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	names := make([]string, 0, len(drivers))
	for n := range drivers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Probe picks the format of an image from its first bytes; raw when no
// format claims it. It is only for reading: a writable image whose format
// was not given must not be taken for anything but what the user said.
func Probe(header []byte, filename string) string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	best, bestScore := "raw", 0
	for _, d := range drivers {
		if d.Probe == nil {
			continue
		}
		if s := d.Probe(header, filename); s > bestScore {
			best, bestScore = d.Name, s
		}
	}
	return best
}

// Error is a failed request on a node: which node, what, where, and the
// error beneath (so errors.Is(err, unix.EPERM) works).
type Error struct {
	Node string
	Op   string
	Off  int64
	Len  int64
	Err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("node '%s': %s at offset %d (%d bytes): %v", e.Node, e.Op, e.Off, e.Len, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrNotSupported is returned for an optional operation a driver lacks and
// the graph cannot emulate.
var ErrNotSupported = errors.New("operation not supported")
