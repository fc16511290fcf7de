package block

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"minivmm/block/objects"
	"minivmm/qemuopen"
)

// Graph holds every node and backend of a VMM. It is safe for concurrent
// use: graph changes are serialized; IO on nodes is not.
type Graph struct {
	files   *qemuopen.Registry
	objects *objects.Registry // set once, before any open (SetObjects)

	mu       sync.Mutex
	nodes    map[string]*Node
	order    []*Node // creation order
	backends map[string]*Backend
	autoID   int
	chain    []string // images opening their backing chains (OpenContext.EnterChain)
	opening  []*Node  // nodes being added: their children's permissions count them
	seq      uint64   // orders nodes and backends as users of a node

	onCorruption  atomic.Pointer[func(Corruption)]
	onWarning     atomic.Pointer[func(Warning)] // warning.go
	onWriteBack   atomic.Pointer[func(WriteBackError)]
	onDrain       atomic.Pointer[DrainObserver]     // drainobserver.go
	onDriverEvent atomic.Pointer[func(DriverEvent)] // driver_event.go

	drivers map[string]*Driver // this graph's own (AddDriver), under mu

	// holds counts the Holds not yet released; holdDone (on mu) is
	// signalled at each release (pivot.go).
	holds    int
	holdDone sync.Cond
}

// Corruption is what a format driver found wrong in an image it was about
// to write (QEMU's BLOCK_IMAGE_CORRUPTED): the node, what, where, and
// whether the image is now refused for writing.
type Corruption struct {
	Node   string
	Msg    string
	Offset int64 // -1: unknown
	Size   int64 // -1: unknown
	Fatal  bool
}

// OnCorruption sets who hears of corruption found in any node (the QMP
// monitor, which sends BLOCK_IMAGE_CORRUPTED).
func (g *Graph) OnCorruption(f func(Corruption)) { g.onCorruption.Store(&f) }

// ReportCorruption passes c to the listener, if any.
func (g *Graph) ReportCorruption(c Corruption) {
	if f := g.onCorruption.Load(); f != nil {
		(*f)(c)
	}
}

// WriteBackError is a node's failure to write back what it held in
// memory (a qcow2 image's lazy refcounts, its L2 tables, the header that
// clears its dirty bit) when its last writer left or it was closed. The
// image is left as a crash would leave it, and the call goes on (QEMU's
// blockdev-del succeeds all the same): the listener is how the monitor
// hears of it (QEMU's BLOCK_IO_ERROR).
type WriteBackError struct {
	Device string // the backend whose leaving made the node write back; "" for a close
	Node   string
	Err    error
}

// OnWriteBackError sets who hears of write-back failures in any node (the
// QMP monitor, which sends BLOCK_IO_ERROR). f runs with the graph locked:
// it must not call back into the graph.
func (g *Graph) OnWriteBackError(f func(WriteBackError)) { g.onWriteBack.Store(&f) }

func (g *Graph) reportWriteBack(e WriteBackError) {
	if f := g.onWriteBack.Load(); f != nil {
		(*f)(e)
	}
}

// NewGraph returns an empty graph whose nodes open files through files.
func NewGraph(files *qemuopen.Registry) *Graph {
	g := &Graph{files: files, nodes: map[string]*Node{}, backends: map[string]*Backend{}}
	g.holdDone.L = &g.mu
	return g
}

// Files is the registry the graph opens files with.
func (g *Graph) Files() *qemuopen.Registry { return g.files }

// SetObjects gives the graph the process's user-creatable objects (TLS
// credentials the nbd driver names); call it before opening any node.
func (g *Graph) SetObjects(r *objects.Registry) { g.objects = r }

// Objects is the process's object registry; nil if none was set.
func (g *Graph) Objects() *objects.Registry { return g.objects }

// Node finds a node by name.
func (g *Graph) Node(name string) (*Node, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	n, ok := g.nodes[name]
	return n, ok
}

// Nodes lists every node, newest first (QEMU's order).
func (g *Graph) Nodes() []*Node {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := slices.Clone(g.order)
	slices.Reverse(out)
	return out
}

// Add opens a node, with any children given inline; a node without a
// node-name gets a generated one. On error nothing was added and nothing
// is left open.
func (g *Graph) Add(o Options) (*Node, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, err := g.checkOptions(o, ""); err != nil {
		return nil, err
	}
	return g.add(o, nil, false)
}

// addLegacy is Add for the tools' (and -drive's) options, which QEMU
// takes without its QAPI schema: a "backing" given without a driver
// goes over the backing file the image names (backing.node-name=foo).
func (g *Graph) addLegacy(o Options) (*Node, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, err := g.checkOptionsIn(o, "", true); err != nil {
		return nil, err
	}
	return g.add(o, nil, false)
}

// AddRoot is blockdev-add (and -blockdev): Add, for a node that must be
// named.
func (g *Graph) AddRoot(o Options) (*Node, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, err := g.checkOptions(o, ""); err != nil {
		return nil, err
	}
	if _, named := o["node-name"]; !named {
		return nil, errors.New("'node-name' must be specified for the root node")
	}
	return g.add(o, nil, false)
}

// inherited are the options an inline child takes from its parent unless
// it sets them itself, as in QEMU.
var inherited = []string{"read-only", "auto-read-only", "discard", "force-share"}

// inherit fills in what a child created inline takes from its parent.
func inherit(child, parent Options) Options {
	o := child.Clone()
	for _, k := range inherited {
		if _, set := o[k]; !set {
			if v, pset := parent[k]; pset {
				o[k] = v
			}
		}
	}
	if pc, _ := parent.Object("cache"); pc != nil {
		c, _ := o.Object("cache")
		c = c.Clone()
		for k, v := range pc {
			if _, set := c[k]; !set {
				c[k] = v
			}
		}
		o["cache"] = c
	}
	return o
}

// childParent is what an inline child through key of a node of drv
// with options o inherits from: a format's file and data file default to
// discard=unmap, whatever the format node says, as in QEMU
// (bdrv_inherited_options): the format itself keeps to its unmap policy
// and passes down only the discards its options ask for (qcow2's
// pass-discard-*).
func childParent(drv *Driver, key string, o Options) Options {
	if !drv.Format || key == "backing" {
		return o
	}
	p := o.Clone()
	p["discard"] = "unmap"
	return p
}

// checkOptions checks o, and the children it gives inline, against the
// schema of the driver it names, as QAPI does before a command runs:
// driver, unknown keys, types, required members, enumerations. prefix
// names o in messages ("options[0].", "file.").
func (g *Graph) checkOptions(o Options, prefix string) (*Driver, error) {
	return g.checkOptionsIn(o, prefix, false)
}

// checkOptionsIn is checkOptions; with headerBacking, a "backing" given
// inline without a driver is left to the image's header (addLegacy).
func (g *Graph) checkOptionsIn(o Options, prefix string, headerBacking bool) (*Driver, error) {
	drvName, present := o["driver"]
	if !present {
		return nil, optionError("Parameter '%sdriver' is missing", prefix)
	}
	name, err := convert(drvName, OptString, prefix+"driver")
	if err != nil {
		return nil, err
	}
	drv, ok := g.lookupDriver(name.(string))
	if !ok {
		return nil, optionError("Parameter '%sdriver' does not accept value '%s'", prefix, name)
	}
	schema := drv.schema()
	if err := checkTypes(o, schema, prefix); err != nil {
		return nil, err
	}
	for _, key := range drv.required() {
		if _, given := o[key]; !given {
			return nil, optionError("Parameter '%s%s' is missing", prefix, key)
		}
	}
	if err := checkUnexpected(o, schema, prefix); err != nil {
		return nil, err
	}
	if _, err := parseState(o, prefix); err != nil {
		return nil, err
	}
	if v, given := o["node-name"]; given {
		if name, _ := convert(v, OptString, "node-name"); name == "" {
			return nil, errors.New("Invalid node-name: ''")
		}
	}
	for _, key := range drv.children() {
		child, inline := o[key].(Options)
		if m, ok := o[key].(map[string]any); ok {
			child, inline = Options(m), true
		}
		if !inline || headerBacking && key == "backing" && fromHeader(child) {
			continue
		}
		if _, err := g.checkOptionsIn(child, prefix+key+".", headerBacking); err != nil {
			return nil, err
		}
	}
	return drv, nil
}

// schema is every option a node of this driver takes; callers must not
// modify it.
func (d *Driver) schema() map[string]OptType {
	d.buildSchema()
	return d.schemaMap
}

// children lists, sorted, the options that name a child node.
func (d *Driver) children() []string {
	d.buildSchema()
	return d.childKeys
}

func (d *Driver) buildSchema() {
	d.schemaOnce.Do(func() {
		schema := maps.Clone(genericOptions)
		maps.Copy(schema, d.Options)
		if d.Format {
			schema["file"] = OptChild
		}
		for _, key := range slices.Sorted(maps.Keys(schema)) {
			if schema[key] == OptChild {
				d.childKeys = append(d.childKeys, key)
			}
		}
		d.schemaMap = schema
	})
}

// required lists the options a node of this driver must be given.
func (d *Driver) required() []string {
	if d.Format {
		return append([]string{"file"}, d.Required...)
	}
	return d.Required
}

// roundToSector rounds a length up to whole 512-byte sectors: QEMU counts
// every node in sectors, so a 1000-byte file is a 1024-byte node whose
// tail reads as zeroes (the file driver's reads past EOF are zeroes).
func roundToSector(n int64) int64 {
	if n <= 0 || n > maxLength {
		return n
	}
	return (n + 511) &^ 511
}

// maxLength is the largest node QEMU accepts (BDRV_MAX_LENGTH).
const maxLength = 1<<63 - 1<<30

// add opens a node from checked options; parent is set for a child given
// inline, whose options inherit from it.
func (g *Graph) add(own Options, parent Options, implicit bool) (n *Node, err error) {
	o := own
	if parent != nil {
		o = inherit(own, parent)
	}
	// Add, AddRoot and addLegacy checked the tree as their callers need.
	drv, err := g.checkOptionsIn(o, "", true)
	if err != nil {
		return nil, err
	}
	state, _ := parseState(o, "")
	nodeName, _ := o.String("node-name", "")
	if nodeName == "" {
		nodeName = g.generateName()
	} else if err := checkNodeName(nodeName); err != nil {
		return nil, err
	} else if g.nodes[nodeName] != nil {
		return nil, fmt.Errorf("Duplicate nodes with node-name='%s'", nodeName)
	}

	// Children first; inline ones are removed again if we fail.
	children := map[string]*Node{}
	var created []*Node
	defer func() {
		if err != nil {
			for _, c := range slices.Backward(created) {
				g.remove(c)
			}
		}
	}()
	var headerChild Options // "backing" options for the child the image names
	for _, key := range drv.children() {
		v, present := o[key]
		if !present || v == nil {
			continue // "backing": null: no child, and none from the image either
		}
		ref, _ := convert(v, OptChild, key)
		if r, ok := ref.(Options); ok && key == "backing" && fromHeader(r) {
			// As QEMU: the backing file the image names is opened with
			// these options over what the header says (its format too).
			headerChild = r
			continue
		}
		var child *Node
		switch ref := ref.(type) {
		case string:
			if child = g.nodes[ref]; child == nil {
				return nil, fmt.Errorf("Cannot find device='%s' nor node-name='%s'", ref, ref)
			}
			if child.held {
				return nil, errHeld(ref)
			}
		case Options:
			if child, err = g.add(ref, childParent(drv, key, o), true); err != nil {
				return nil, err
			}
			created = append(created, child)
		}
		children[key] = child
	}

	driverOpts := Options{}
	for k := range drv.Options {
		if v, ok := o[k]; ok {
			driverOpts[k] = v
		}
	}
	if headerChild != nil {
		delete(driverOpts, "backing") // the driver opens the one the image names
	}
	nn := &Node{g: g, name: nodeName, implicit: implicit, drv: drv, opts: o, own: own, state: state,
		children: children, parents: map[*Node]string{}, shared: PermAll, attached: map[*Node]uint64{}}
	nn.gate.init()
	// The node's children give it what it needs of them before its driver
	// reads them (QEMU attaches a child with its permissions before a
	// format reads its header): a conflict refuses the node first.
	g.opening = append(g.opening, nn)
	defer func() {
		g.opening = slices.DeleteFunc(g.opening, func(m *Node) bool { return m == nn })
		if err != nil {
			g.releasePerms()
		}
	}()
	if err := g.refreshPerms(); err != nil {
		return nil, err
	}
	img, err := drv.Open(&OpenContext{
		NodeName: nodeName, Options: driverOpts, Writable: state.writableFor(0),
		Direct: state.direct, NoFlush: state.noFlush, Unmap: state.discard == "unmap", Files: g.files, Objects: g.objects, children: children,
		g: g, parentOpts: o, created: &created, headerChild: headerChild,
	})
	if err != nil {
		return nil, err
	}
	if headerChild != nil && children["backing"] == nil {
		img.Close()
		// QEMU's words for an image naming no backing file.
		return nil, errors.New("Could not open backing file: Must specify either driver or file")
	}
	length, err := img.Length()
	length = roundToSector(length)
	if err == nil && length > maxLength {
		err = unix.EFBIG
	}
	if err != nil {
		img.Close()
		return nil, fmt.Errorf("Could not refresh total sector count: %s", strerror(err))
	}
	nn.img = img
	nn.sink, _ = img.(EventSink)
	nn.rw = state.writableFor(0)
	nn.length.Store(length)
	limits, err := nn.computeLimits()
	if err != nil {
		img.Close()
		return nil, err
	}
	nn.setLimits(limits)
	// Children the driver opened itself (a backing file) count now.
	if err := g.refreshPerms(); err != nil {
		img.Close()
		return nil, err
	}
	g.seq++
	for key, c := range children {
		c.parents[nn] = key
		c.attached[nn] = g.seq
	}
	g.nodes[nodeName] = nn
	g.order = append(g.order, nn)
	return nn, nil
}

// strerror words an error as the C library does, where it is an errno.
func strerror(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return qemuopen.Strerror(errno)
	}
	return err.Error()
}

// parseState reads the generic options, with QEMU's defaults; prefix
// names them in messages.
func parseState(o Options, prefix string) (nodeState, error) {
	var s nodeState
	var err error
	if s.readOnly, err = o.Bool("read-only", false); err != nil {
		return s, err
	}
	if s.autoReadOnly, err = o.Bool("auto-read-only", false); err != nil {
		return s, err
	}
	if s.forceShare, err = o.Bool("force-share", false); err != nil {
		return s, err
	}
	cache, err := o.Object("cache")
	if err != nil {
		return s, err
	}
	if err := checkKeys(cache, cacheOptions, prefix+"cache."); err != nil {
		return s, err
	}
	if s.direct, err = cache.Bool("direct", false); err != nil {
		return s, err
	}
	if s.noFlush, err = cache.Bool("no-flush", false); err != nil {
		return s, err
	}
	discard, err := o.String("discard", "ignore")
	if err != nil {
		return s, err
	}
	switch discard {
	case "ignore", "unmap":
		s.discard = discard
	default:
		return s, optionError("Parameter '%sdiscard' does not accept value '%s'", prefix, discard)
	}
	if s.detectZeroes, err = o.String("detect-zeroes", "off"); err != nil {
		return s, err
	}
	switch s.detectZeroes {
	case "off", "on", "unmap":
	default:
		return s, optionError("Parameter '%sdetect-zeroes' does not accept value '%s'", prefix, s.detectZeroes)
	}
	if s.detectZeroes == "unmap" && s.discard != "unmap" {
		return s, errors.New("setting detect-zeroes to unmap is not allowed without setting discard operation to unmap")
	}
	if s.forceShare && !s.readOnly {
		return s, errors.New("force-share=on can only be used with read-only images")
	}
	return s, nil
}

// checkNodeName applies QEMU's rule for ids: a letter, then letters,
// digits, '-', '.', '_'.
func checkNodeName(name string) error {
	if len(name) >= 32 {
		return errors.New("Node name too long")
	}
	for i, c := range name {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !letter || !letter && !(c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return fmt.Errorf("Invalid node-name: '%s'", name)
		}
	}
	return nil
}

// generateName makes a name for an unnamed node as QEMU does: "#block",
// a counter from 0 and two random digits, never a user's name (users' names
// cannot start with '#').
func (g *Graph) generateName() string {
	for {
		name := fmt.Sprintf("#block%d%02d", g.autoID, rand.IntN(100))
		g.autoID++
		if g.nodes[name] == nil {
			return name
		}
	}
}

// Delete closes a node (blockdev-del) and the children that were created
// with it; a node in use, or one created inline, is refused. A failure to
// write back at close does not fail it (QEMU's blockdev-del succeeds too):
// the node is gone all the same, and the OnWriteBackError listener hears
// of it.
func (g *Graph) Delete(name string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := g.nodes[name]
	if n == nil {
		return fmt.Errorf("Failed to find node with node-name='%s'", name)
	}
	// QEMU's order: a backend's node, then a backing node (an op
	// blocker), then one created inline, then any other reference.
	if len(n.users) > 0 {
		return fmt.Errorf("Node %s is in use", name)
	}
	if n.held {
		return errHeld(name)
	}
	for _, p := range slices.SortedFunc(maps.Keys(n.parents), func(a, b *Node) int { return strings.Compare(a.name, b.name) }) {
		if n.parents[p] == "backing" {
			return fmt.Errorf("Node '%s' is busy: node is used as backing hd of '%s'", name, p.name)
		}
	}
	switch {
	case n.implicit:
		return fmt.Errorf("Node %s is not owned by the monitor", name)
	case len(n.parents) > 0:
		return fmt.Errorf("Block device %s is in use", name)
	}
	g.remove(n) // its failures went to the OnWriteBackError listener
	g.releasePerms()
	return nil
}

// remove closes n and unlinks it; inline children go with it. The
// requests in flight on n end first; later ones fail with ErrClosed. It
// returns what closing them failed with (a format writing back its
// metadata at close); they are unlinked all the same.
func (g *Graph) remove(n *Node) error {
	var errs []error
	end := drainNodes(drainOrder([]*Node{n}))
	n.gate.close()
	n.mu.Lock()
	// A node whose write-back failed as its last writer left tries again
	// here, without the write permission its file child gave back: that
	// failure was already reported, and the image is as safe as then.
	if err := n.img.Close(); err != nil && !n.writeBackFailed {
		errs = append(errs, &Error{Node: n.name, Op: "close", Err: err})
		g.reportWriteBack(WriteBackError{Node: n.name, Err: err})
	}
	n.mu.Unlock()
	end()
	delete(g.nodes, n.name)
	g.order = slices.DeleteFunc(g.order, func(m *Node) bool { return m == n })
	for _, c := range n.children {
		delete(c.parents, n)
		delete(c.attached, n)
		if c.implicit && len(c.parents) == 0 {
			errs = append(errs, g.remove(c))
		}
	}
	return errors.Join(errs...)
}

// Close closes every node, roots first, as at exit. It returns every
// failure to write back what a node held (at the loss of its last
// writer, or at close): the images are closed all the same, and as safe
// as after a crash, but the caller must hear of it.
func (g *Graph) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var errs []error
	for _, b := range g.backends {
		errs = append(errs, g.detach(b))
	}
	for len(g.order) > 0 {
		for _, n := range slices.Backward(g.order) {
			if len(n.parents) == 0 {
				errs = append(errs, g.remove(n))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// ErrReadOnly refuses write permission on a read-only node, in QEMU's
// words; it is an EPERM.
var ErrReadOnly error = readOnlyError{}

type readOnlyError struct{}

func (readOnlyError) Error() string { return "Block node is read-only" }
func (readOnlyError) Unwrap() error { return unix.EPERM }

// Perm is what a backend's user needs of its node and lets others do.
type Perm struct {
	Write bool
	// ShareWrite lets other users write too (QEMU's share-rw=on); a node
	// has at most one writer unless every writer shares.
	ShareWrite bool
	// Image: the user reads the node's bytes as an image format reads
	// its file (qemu-img check on a qcow2 file): it needs what a format
	// needs of its file child and lets no one else write or resize it.
	Image bool
}

// Backend is a user of a root node: a -drive, or the IO tool. It holds
// the permissions its user needs.
type Backend struct {
	name string
	node atomic.Pointer[Node] // moved by a snapshot (under g.mu and io); read by IO
	io   sync.RWMutex         // held shared by the backend's requests (backend_io.go)
	perm Perm
	seq  uint64
	owns *Node // the node it was made with, which only it keeps open (a -drive's; pivot.go)
	held bool  // a Hold has its io lock (under g.mu; pivot.go)
}

// Name is the backend's name (the -drive id), empty for anonymous ones.
func (b *Backend) Name() string { return b.name }

// Node is the root node the backend uses.
func (b *Backend) Node() *Node { return b.node.Load() }

// Attach makes a backend on node. Write permission is refused by a
// read-only node and by one another user writes without sharing; an
// auto-read-only node answers it by reopening read-write (refreshPerms),
// which fails the attach if its file cannot be opened so.
func (g *Graph) Attach(name string, node *Node, perm Perm) (*Backend, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if name != "" && g.backends[name] != nil {
		return nil, fmt.Errorf("Duplicate ID '%s' for drive", name)
	}
	if node.held {
		return nil, errHeld(node.name)
	}
	g.seq++
	b := &Backend{name: name, perm: perm, seq: g.seq}
	b.node.Store(node)
	if perm.Write {
		if err := g.addWriter(node, perm.ShareWrite); err != nil {
			return nil, err
		}
	}
	node.users = append(node.users, b)
	if err := g.refreshPerms(); err != nil {
		node.users = slices.DeleteFunc(node.users, func(u *Backend) bool { return u == b })
		if perm.Write {
			g.dropWriter(node, perm.ShareWrite, name)
		}
		return nil, err
	}
	if name != "" {
		g.backends[name] = b
	}
	return b, nil
}

// Detach drops a backend and its permissions. It returns what writing
// back the node's held metadata failed with, when this was its last
// writer; the permission is dropped all the same.
func (g *Graph) Detach(b *Backend) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.detach(b)
}

func (g *Graph) detach(b *Backend) error {
	n := b.node.Load()
	if !slices.Contains(n.users, b) {
		return nil
	}
	// The backend's requests end before its permissions go (QEMU's
	// blk_detach drains too).
	end := drainNodes(drainOrder([]*Node{n}))
	defer end()
	n.users = slices.DeleteFunc(n.users, func(u *Backend) bool { return u == b })
	if b.name != "" {
		delete(g.backends, b.name)
	}
	var err error
	if b.perm.Write {
		err = g.dropWriter(n, b.perm.ShareWrite, b.name)
	}
	g.releasePerms()
	return err
}

// Backend finds a backend by name.
func (g *Graph) Backend(name string) (*Backend, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	b, ok := g.backends[name]
	return b, ok
}

// Backends lists the named backends, sorted by name.
func (g *Graph) Backends() []*Backend {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*Backend, 0, len(g.backends))
	for _, k := range slices.Sorted(maps.Keys(g.backends)) {
		out = append(out, g.backends[k])
	}
	return out
}

// addWriter gives n (and, through it, its "file" child) one more writer.
// The writer count decides who may write a node and when a format writes
// back what it holds; whether a node's fds are read-write follows its
// permissions instead (refreshPerms, after the user is attached).
func (g *Graph) addWriter(n *Node, share bool) error {
	if n.state.readOnly {
		return ErrReadOnly
	}
	if w := n.writers.Load(); w > 0 && !(share && n.sharedWriters == w) {
		return fmt.Errorf("Conflicts with another writer of node '%s', which does not share 'write'", n.name)
	}
	written := n.writtenChildren()
	for i, c := range written {
		if err := g.addWriter(c, share); err != nil {
			for _, done := range written[:i] {
				g.dropWriter(done, share, "")
			}
			return err
		}
	}
	n.writers.Add(1)
	n.writeBackFailed = false
	if share {
		n.sharedWriters++
	}
	return nil
}

// dropWriter undoes addWriter; the last writer leaving a node lets its
// driver write back what it held in memory, while its file child still
// holds write access (the caller's releasePerms then reopens read-only
// what no longer needs to write). device is the leaving writer's backend
// name, for the OnWriteBackError listener.
func (g *Graph) dropWriter(n *Node, share bool, device string) error {
	if share {
		n.sharedWriters--
	}
	last := n.writers.Add(-1) == 0
	var err error
	if d, ok := n.img.(WriterDropper); ok && last {
		// A failure leaves the image as a crash would (a qcow2 image
		// stays marked dirty and is repaired when next written); the
		// writer that left hears of it.
		if e := d.DropWriter(); e != nil {
			err = &Error{Node: n.name, Op: "drop writer", Err: e}
			n.writeBackFailed = true
			g.reportWriteBack(WriteBackError{Device: device, Node: n.name, Err: e})
		}
	}
	for _, c := range n.writtenChildren() {
		err = errors.Join(err, g.dropWriter(c, share, device))
	}
	return err
}

// fromHeader: backing options that name no image of their own (no
// driver, or no file or filename) complete the backing file the image
// names, as QEMU's bdrv_open_backing_file does with them.
func fromHeader(o Options) bool {
	return o["driver"] == nil || o["file"] == nil && o["filename"] == nil
}
