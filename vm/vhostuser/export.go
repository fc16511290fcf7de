package vhostuser

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"minivmm/block"
	"minivmm/vm/virtioblk"
)

// ExportOptions are a vhost-user-blk export's, by qemu-storage-daemon's
// names (qapi/block-export.json: BlockExportOptions and
// BlockExportOptionsVhostUserBlk).
type ExportOptions struct {
	ID       string
	NodeName string
	// Path is addr.path, the unix socket to listen on.
	Path     string
	Writable bool
	// Writethrough makes every write reach the disk before it completes
	// (the write cache the guest sees starts off).
	Writethrough     bool
	NumQueues        int    // QEMU's default is 1
	LogicalBlockSize uint64 // QEMU's default is 512
}

// ExportInfo is an export as query-block-exports lists it.
type ExportInfo struct {
	ID, Type, NodeName string
	ShuttingDown       bool
}

// Exports are the block exports of one VMM: each serves a node of graph
// to vhost-user-blk front ends, as a user of the node like a device.
type Exports struct {
	graph *block.Graph
	logf  func(format string, args ...any)

	mu        sync.Mutex
	list      []*export // newest first, as QEMU lists them
	onDeleted func(id string)
}

type export struct {
	id      string
	backend *block.Backend
	srv     *Server
}

// NewExports makes the export table over graph; logf hears of front ends
// that broke the protocol and of requests that failed.
func NewExports(graph *block.Graph, logf func(format string, args ...any)) *Exports {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Exports{graph: graph, logf: logf}
}

// OnDeleted sets who hears that an export is gone (BLOCK_EXPORT_DELETED).
func (x *Exports) OnDeleted(f func(id string)) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.onDeleted = f
}

// Add creates an export and starts listening. The checks and their
// wording are QEMU's (blk_exp_add, vu_blk_exp_create).
func (x *Exports) Add(o ExportOptions) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !wellFormedID(o.ID) {
		return errors.New("Invalid block export id")
	}
	if x.find(o.ID) >= 0 {
		return fmt.Errorf("Block export id '%s' is already in use", o.ID)
	}
	node, ok := x.graph.Node(o.NodeName)
	if !ok {
		return fmt.Errorf("Cannot find device='' nor node-name='%s'", o.NodeName)
	}
	if o.Writable && node.ReadOnly() {
		return errors.New("Cannot export read-only node as writable")
	}
	lbs := o.LogicalBlockSize
	if lbs == 0 || lbs&(lbs-1) != 0 {
		return fmt.Errorf("Property %s.logical-block-size doesn't take value '%d', it's not a power of 2", o.ID, lbs)
	}
	if lbs < 512 || lbs > 2<<20 {
		return fmt.Errorf("Property %s.logical-block-size doesn't take value %d (minimum: 512, maximum: 2097152)", o.ID, lbs)
	}
	nq := o.NumQueues
	switch {
	case nq <= 0:
		return errors.New("num-queues must be greater than 0")
	case nq > 1024:
		// QEMU takes any uint16 here, but virtio-pci has at most 1024
		// queues: the front end would fail later, less clearly.
		return fmt.Errorf("num-queues %d is more than a virtio device has (1024)", nq)
	}
	// A user of the node as a device is: it reads, writes when writable,
	// and lets others do anything (blk_new(ctx, perm, BLK_PERM_ALL)).
	b, err := x.graph.Attach("", node, block.Perm{Write: o.Writable, ShareWrite: true})
	if err != nil {
		return err
	}
	dev, err := virtioblk.New(b, virtioblk.Config{
		NumQueues: nq, LogicalBlockSize: uint32(lbs), ReadOnly: !o.Writable,
		Serial: "vhost_user_blk", WriteCache: !o.Writethrough,
		OnIOError: func(err error) { x.logf("vhost-user-blk export '%s': %v", o.ID, err) },
	})
	if err != nil {
		x.graph.Detach(b)
		return err
	}
	srv, err := Listen(o.Path, &blkDevice{dev: dev, numQueues: nq, logf: x.logf}, x.logf)
	if err != nil {
		x.graph.Detach(b)
		return fmt.Errorf("Failed to bind socket to %s: %s", o.Path, errnoText(err))
	}
	x.list = slices.Insert(x.list, 0, &export{id: o.ID, backend: b, srv: srv})
	return nil
}

func (x *Exports) find(id string) int {
	return slices.IndexFunc(x.list, func(e *export) bool { return e.id == id })
}

// InUseError refuses a safe removal of an export a front end is connected
// to; its Hint says how to force it.
type InUseError struct{ ID string }

func (e *InUseError) Error() string { return fmt.Sprintf("export '%s' still in use", e.ID) }

// Hint is QEMU's error_append_hint for it.
func (e *InUseError) Hint() string { return "Use mode='hard' to force client disconnect" }

// Delete removes an export: it stops listening, disconnects its front end
// (only with hard; a safe removal of a connected export fails) once its
// requests in flight have completed, and gives up the node.
func (x *Exports) Delete(id string, hard bool) error {
	x.mu.Lock()
	i := x.find(id)
	if i < 0 {
		x.mu.Unlock()
		return fmt.Errorf("Export '%s' is not found", id)
	}
	e := x.list[i]
	if !hard && e.srv.Connected() {
		x.mu.Unlock()
		return &InUseError{ID: id}
	}
	x.list = slices.Delete(x.list, i, i+1)
	onDeleted := x.onDeleted
	x.mu.Unlock()
	err := x.close(e)
	if onDeleted != nil {
		onDeleted(id)
	}
	return err
}

func (x *Exports) close(e *export) error {
	e.srv.Close()
	return x.graph.Detach(e.backend)
}

// List is every export, newest first.
func (x *Exports) List() []ExportInfo {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]ExportInfo, 0, len(x.list))
	for _, e := range x.list {
		out = append(out, ExportInfo{ID: e.id, Type: "vhost-user-blk", NodeName: e.backend.Node().Name()})
	}
	return out
}

// CloseAll removes every export, as the VMM exits (no events: QEMU sends
// them, but nobody is left to hear them).
func (x *Exports) CloseAll() error {
	x.mu.Lock()
	list := x.list
	x.list = nil
	x.mu.Unlock()
	var errs []error
	for _, e := range list {
		errs = append(errs, x.close(e))
	}
	return errors.Join(errs...)
}

// wellFormedID is QEMU's id_wellformed: a letter, then letters, digits,
// '-', '.', '_'.
func wellFormedID(id string) bool {
	if id == "" || !isLetter(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !isLetter(c) && !(c >= '0' && c <= '9') && c != '-' && c != '.' && c != '_' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
