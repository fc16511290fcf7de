package monitor

import (
	"minivmm/block"
)

// The snapshot commands and the transaction that groups them, with QEMU
// 7.2's names. A transaction's actions are checked by the dispatcher
// against TransactionAction (a union on "type"), so the parsing here is
// of checked arguments only.

var (
	tBlockdevSnapshot = object("BlockdevSnapshot", req("node", tStr), req("overlay", tStr))

	tActionCompletionMode  = enum("ActionCompletionMode", "individual", "grouped")
	tTransactionProperties = object("TransactionProperties", opt("completion-mode", tActionCompletionMode))

	// tTransactionAction lists the actions minivmm has; QEMU's others
	// are refused by the type check, as any unknown type is.
	tTransactionAction = func() *qtype {
		kind := enum("TransactionActionKind", "abort", "blockdev-snapshot")
		t := object("TransactionAction", req("type", kind))
		t.tag = "type"
		t.variants = []variant{
			{"abort", object("AbortWrapper", req("data", object("Abort")))},
			{"blockdev-snapshot", object("BlockdevSnapshotWrapper", req("data", tBlockdevSnapshot))},
		}
		return t
	}()
)

func blockdevSnapshot(c *call, args Args) (any, error) {
	return nil, c.mon.srv.graph.Snapshot([]block.SnapshotAction{snapshotAction(args)})
}

func snapshotAction(args map[string]any) block.SnapshotAction {
	node, _ := args["node"].(string)
	overlay, _ := args["overlay"].(string)
	return block.SnapshotAction{Node: node, Overlay: overlay}
}

// transaction runs its actions all or nothing: each is prepared in
// order (the first refusal is the reply), and only if all are ready do
// they take effect.
func transaction(c *call, args Args) (any, error) {
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
		}
	}
	return nil, c.mon.srv.graph.Snapshot(list)
}
