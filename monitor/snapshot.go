package monitor

import (
	"errors"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/file"
	"minivmm/block/qcow2"
	"minivmm/qemuopen"
)

// The snapshot commands and the transaction that groups them, with QEMU
// 7.2's names. A transaction's actions are checked by the dispatcher
// against TransactionAction (a union on "type"), so the parsing here is
// of checked arguments only.

var (
	tBlockdevSnapshot = object("BlockdevSnapshot", req("node", tStr), req("overlay", tStr))

	tNewImageMode         = enum("NewImageMode", "existing", "absolute-paths")
	tBlockdevSnapshotSync = object("BlockdevSnapshotSync",
		opt("device", tStr), opt("node-name", tStr), req("snapshot-file", tStr),
		opt("snapshot-node-name", tStr), opt("format", tStr), opt("mode", tNewImageMode))

	tActionCompletionMode  = enum("ActionCompletionMode", "individual", "grouped")
	tTransactionProperties = object("TransactionProperties", opt("completion-mode", tActionCompletionMode))

	// tTransactionAction lists the actions minivmm has; QEMU's others
	// are refused by the type check, as any unknown type is.
	tTransactionAction = func() *qtype {
		bitmapKinds, bitmapVars := bitmapVariants()
		kind := enum("TransactionActionKind", append(append([]string{"abort"}, bitmapKinds...), "blockdev-snapshot", "blockdev-snapshot-sync")...)
		t := object("TransactionAction", req("type", kind))
		t.tag = "type"
		t.variants = append(append([]variant{
			{"abort", object("AbortWrapper", req("data", object("Abort")))}}, bitmapVars...),
			variant{"blockdev-snapshot", object("BlockdevSnapshotWrapper", req("data", tBlockdevSnapshot))},
			variant{"blockdev-snapshot-sync", object("BlockdevSnapshotSyncWrapper", req("data", tBlockdevSnapshotSync))},
		)
		return t
	}()
)

func blockdevSnapshot(c *call, args Args) (any, error) {
	return nil, c.mon.srv.snapshot([]block.SnapshotAction{snapshotAction(args)})
}

func snapshotAction(args map[string]any) block.SnapshotAction {
	node, _ := args["node"].(string)
	overlay, _ := args["overlay"].(string)
	return block.SnapshotAction{Node: node, Overlay: overlay}
}

func blockdevSnapshotSync(c *call, args Args) (any, error) {
	return nil, c.mon.srv.snapshot([]block.SnapshotAction{snapshotSyncAction(args)})
}

func snapshotSyncAction(args map[string]any) block.SnapshotAction {
	str := func(k string) string { s, _ := args[k].(string); return s }
	return block.SnapshotAction{Sync: &block.SnapshotSync{
		Device: str("device"), NodeName: str("node-name"), File: str("snapshot-file"),
		Format: str("format"), OverlayName: str("snapshot-node-name"),
		Existing: str("mode") == "existing", Create: createOverlay,
	}}
}

// createOverlay makes a blockdev-snapshot-sync overlay as QEMU's
// bdrv_img_create does, through the fdset registry: qcow2 only (the one
// format minivmm creates that takes a backing file), the file locked as
// QEMU locks it while creating, synced before the node opens it.
func createOverlay(files *qemuopen.Registry, path, format, backing, backingFormat string, size int64) error {
	switch _, known := block.LookupDriver(format); {
	case !known:
		return genericError("Unknown file format '%s'", format)
	case format != "qcow2":
		return genericError("Backing file not supported for file format '%s'", format)
	}
	co := qcow2.CreateOptions{Size: uint64(size), BackingFile: backing, BackingFormat: backingFormat}
	if err := qcow2.ValidateCreate(co); err != nil {
		return genericError("%s", err)
	}
	fd, err := files.Create(path, unix.O_RDWR, 0o644)
	if err != nil {
		var qe *qemuopen.Error
		if errors.As(err, &qe) && qe.Msg == "" {
			return genericError("Could not create '%s': %s", path, qemuopen.Strerror(qe.Errno))
		}
		return err
	}
	defer files.Close(fd)
	release, err := file.LockForCreate(files, fd, path)
	if err != nil {
		return err
	}
	defer release()
	if err := unix.Ftruncate(fd, 0); err != nil {
		return genericError("Could not create '%s': %s", path, qemuopen.Strerror(err.(unix.Errno)))
	}
	if err := qcow2.Create(qcow2.FdTarget(fd), co); err != nil {
		return err
	}
	return unix.Fsync(fd)
}

// transaction runs its actions all or nothing: each is prepared in
// order (the first refusal is the reply), and only if all are ready do
// they take effect.
func transaction(c *call, args Args) (any, error) {
	list, err := transactionActions(args)
	if err != nil {
		return nil, err
	}
	return nil, c.mon.srv.snapshot(list)
}

// transactionActions turns checked transaction arguments into the block
// layer's actions.
func transactionActions(args Args) ([]block.SnapshotAction, error) {
	actions, _ := args["actions"].([]map[string]any)
	if props, ok := args["properties"].(map[string]any); ok && props["completion-mode"] == "grouped" {
		for _, a := range actions {
			if a["type"] != "abort" {
				return nil, genericError("Action '%s' does not support Transaction property completion-mode = grouped", a["type"])
			}
		}
	}
	list := make([]block.SnapshotAction, 0, len(actions))
	for _, a := range actions {
		data, _ := a["data"].(map[string]any)
		switch a["type"] {
		case "abort":
			list = append(list, block.SnapshotAction{Fail: genericError("Transaction aborted using Abort action")})
		case "blockdev-snapshot":
			list = append(list, snapshotAction(data))
		case "blockdev-snapshot-sync":
			list = append(list, snapshotSyncAction(data))
		default:
			ba, err := transactionBitmapAction(a["type"].(string), data)
			if err != nil {
				return nil, err
			}
			if ba != nil {
				list = append(list, *ba)
			}
		}
	}
	return list, nil
}
