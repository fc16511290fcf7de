// Package export is the table of a VMM's block exports: each serves a
// node of the graph to some outside client (vhost-user-blk front ends,
// NBD clients) as a user of the node like a device. The table knows ids,
// nodes, removal and its event; each export type registers a constructor
// for the rest, as database/sql's drivers do (but per table: no
// package-level registry).
package export

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"minivmm/block"
)

// Common are the options every export has (qapi/block-export.json's
// BlockExportOptions base).
type Common struct {
	ID, NodeName string
	Writable     bool
	// Writethrough makes every write reach the disk before it completes.
	Writethrough bool
}

// Options are one export type's options.
type Options interface {
	// ExportType is the BlockExportType: "nbd", "vhost-user-blk".
	ExportType() string
	Common() Common
}

// Export is a running export, as its type's constructor made it.
type Export interface {
	// InUse tells whether a client is connected (a safe removal fails).
	InUse() bool
	// Close disconnects every client once its requests in flight have
	// completed and stops serving; the node stays attached until then.
	Close() error
}

// Constructor makes an export of its type serving backend, which the
// table has attached to the node (writer when o is writable) and
// detaches again if the constructor fails.
type Constructor func(o Options, backend *block.Backend) (Export, error)

// Info is an export as query-block-exports lists it.
type Info struct {
	ID, Type, NodeName string
	ShuttingDown       bool
}

// Table is the block exports of one VMM.
type Table struct {
	graph *block.Graph

	mu        sync.Mutex
	types     map[string]Constructor
	list      []*entry // newest first, as QEMU lists them
	onDeleted func(id string)
}

type entry struct {
	id, typ string
	backend *block.Backend
	exp     Export
}

// NewTable makes an empty table over graph, with no export types.
func NewTable(graph *block.Graph) *Table {
	return &Table{graph: graph, types: map[string]Constructor{}}
}

// Register makes exports of type typ possible, made by c.
func (t *Table) Register(typ string, c Constructor) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.types[typ] = c
}

// Registered tells whether the table can make exports of type typ.
func (t *Table) Registered(typ string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.types[typ]
	return ok
}

// OnDeleted sets who hears that an export is gone (BLOCK_EXPORT_DELETED).
func (t *Table) OnDeleted(f func(id string)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.onDeleted = f
}

// Add creates an export. The checks and their wording are QEMU's
// (blk_exp_add); the type's own are its constructor's.
func (t *Table) Add(o Options) error {
	c := o.Common()
	t.mu.Lock()
	defer t.mu.Unlock()
	newExport, ok := t.types[o.ExportType()]
	if !ok {
		return fmt.Errorf("minivmm has no %s exports", o.ExportType())
	}
	if !block.WellFormedID(c.ID) {
		return errors.New("Invalid block export id")
	}
	if t.find(c.ID) >= 0 {
		return fmt.Errorf("Block export id '%s' is already in use", c.ID)
	}
	node, ok := t.graph.Node(c.NodeName)
	if !ok {
		return fmt.Errorf("Cannot find device='' nor node-name='%s'", c.NodeName)
	}
	if c.Writable && node.ReadOnly() {
		return errors.New("Cannot export read-only node as writable")
	}
	// A user of the node as a device is: it reads, writes when writable,
	// and lets others do anything (blk_new(ctx, perm, BLK_PERM_ALL)).
	b, err := t.graph.Attach("", node, block.Perm{Write: c.Writable, ShareWrite: true})
	if err != nil {
		return err
	}
	exp, err := newExport(o, b)
	if err != nil {
		t.graph.Detach(b)
		return err
	}
	t.list = slices.Insert(t.list, 0, &entry{id: c.ID, typ: o.ExportType(), backend: b, exp: exp})
	return nil
}

func (t *Table) find(id string) int {
	return slices.IndexFunc(t.list, func(e *entry) bool { return e.id == id })
}

// InUseError refuses a safe removal of an export a client is connected
// to; its Hint says how to force it.
type InUseError struct{ ID string }

func (e *InUseError) Error() string { return fmt.Sprintf("export '%s' still in use", e.ID) }

// Hint is QEMU's error_append_hint for it.
func (e *InUseError) Hint() string { return "Use mode='hard' to force client disconnect" }

// NotFoundError is the removal of an export that does not exist.
type NotFoundError struct{ ID string }

func (e *NotFoundError) Error() string { return fmt.Sprintf("Export '%s' is not found", e.ID) }

// Delete removes an export: it disconnects its clients (only with hard;
// a safe removal of an export in use fails) once their requests in
// flight have completed, gives up the node and reports the deletion.
func (t *Table) Delete(id string, hard bool) error {
	return t.DeleteIf(id, "", hard)
}

// DeleteIf is Delete of an export that must be of type typ ("": any).
func (t *Table) DeleteIf(id, typ string, hard bool) error {
	t.mu.Lock()
	i := t.find(id)
	if i < 0 || typ != "" && t.list[i].typ != typ {
		t.mu.Unlock()
		return &NotFoundError{ID: id}
	}
	e := t.list[i]
	if !hard && e.exp.InUse() {
		t.mu.Unlock()
		return &InUseError{ID: id}
	}
	t.list = slices.Delete(t.list, i, i+1)
	onDeleted := t.onDeleted
	t.mu.Unlock()
	err := t.close(e)
	if onDeleted != nil {
		onDeleted(id)
	}
	return err
}

// DeleteType removes every export of type typ, disconnecting their
// clients, each with its event (nbd-server-stop's
// blk_exp_close_all_type).
func (t *Table) DeleteType(typ string) error {
	t.mu.Lock()
	var gone []*entry
	t.list = slices.DeleteFunc(t.list, func(e *entry) bool {
		if e.typ == typ {
			gone = append(gone, e)
			return true
		}
		return false
	})
	onDeleted := t.onDeleted
	t.mu.Unlock()
	var errs []error
	for _, e := range gone {
		errs = append(errs, t.close(e))
		if onDeleted != nil {
			onDeleted(e.id)
		}
	}
	return errors.Join(errs...)
}

func (t *Table) close(e *entry) error {
	return errors.Join(e.exp.Close(), t.graph.Detach(e.backend))
}

// List is every export, newest first.
func (t *Table) List() []Info {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Info, 0, len(t.list))
	for _, e := range t.list {
		out = append(out, Info{ID: e.id, Type: e.typ, NodeName: e.backend.Node().Name()})
	}
	return out
}

// CloseAll removes every export, as the VMM exits (no events: QEMU sends
// them, but nobody is left to hear them).
func (t *Table) CloseAll() error {
	t.mu.Lock()
	list := t.list
	t.list = nil
	t.mu.Unlock()
	var errs []error
	for _, e := range list {
		errs = append(errs, t.close(e))
	}
	return errors.Join(errs...)
}
