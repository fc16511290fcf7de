package vhostuser

import (
	"errors"
	"fmt"

	"minivmm/block"
	"minivmm/block/export"
	"minivmm/vm/virtioblk"
)

// ExportType is the BlockExportType of these exports.
const ExportType = "vhost-user-blk"

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

// ExportType makes ExportOptions an export.Options.
func (o ExportOptions) ExportType() string { return ExportType }

// Common makes ExportOptions an export.Options.
func (o ExportOptions) Common() export.Common {
	return export.Common{ID: o.ID, NodeName: o.NodeName, Writable: o.Writable, Writethrough: o.Writethrough}
}

// InUseError is the export table's refusal of a safe removal.
type InUseError = export.InUseError

// NewExports makes an export table over graph with vhost-user-blk
// registered in it; logf hears of front ends that broke the protocol and
// of requests that failed.
func NewExports(graph *block.Graph, logf func(format string, args ...any)) *export.Table {
	t := export.NewTable(graph)
	Register(t, logf)
	return t
}

// Register makes vhost-user-blk exports possible in t.
func Register(t *export.Table, logf func(format string, args ...any)) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	t.Register(ExportType, func(o export.Options, b *block.Backend) (export.Export, error) {
		vo, ok := o.(ExportOptions)
		if !ok {
			return nil, fmt.Errorf("vhost-user-blk export given %T", o)
		}
		return newExport(vo, b, logf)
	})
}

type blkExport struct{ srv *Server }

func (e blkExport) InUse() bool  { return e.srv.Connected() }
func (e blkExport) Close() error { return e.srv.Close() }

// newExport checks the options (vu_blk_exp_create's checks and words)
// and starts listening.
func newExport(o ExportOptions, b *block.Backend, logf func(string, ...any)) (export.Export, error) {
	lbs := o.LogicalBlockSize
	if lbs == 0 || lbs&(lbs-1) != 0 {
		return nil, fmt.Errorf("Property %s.logical-block-size doesn't take value '%d', it's not a power of 2", o.ID, lbs)
	}
	if lbs < 512 || lbs > 2<<20 {
		return nil, fmt.Errorf("Property %s.logical-block-size doesn't take value %d (minimum: 512, maximum: 2097152)", o.ID, lbs)
	}
	nq := o.NumQueues
	switch {
	case nq <= 0:
		return nil, errors.New("num-queues must be greater than 0")
	case nq > 1024:
		// QEMU takes any uint16 here, but virtio-pci has at most 1024
		// queues: the front end would fail later, less clearly.
		return nil, fmt.Errorf("num-queues %d is more than a virtio device has (1024)", nq)
	}
	dev, err := virtioblk.New(b, virtioblk.Config{
		NumQueues: nq, LogicalBlockSize: uint32(lbs), ReadOnly: !o.Writable,
		Serial: "vhost_user_blk", WriteCache: !o.Writethrough,
		OnIOError: func(err error) { logf("vhost-user-blk export '%s': %v", o.ID, err) },
	})
	if err != nil {
		return nil, err
	}
	srv, err := Listen(o.Path, &blkDevice{dev: dev, numQueues: nq, logf: logf}, logf)
	if err != nil {
		return nil, fmt.Errorf("Failed to bind socket to %s: %s", o.Path, errnoText(err))
	}
	return blkExport{srv}, nil
}
