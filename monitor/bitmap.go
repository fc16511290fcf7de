package monitor

import (
	"math"

	"minivmm/block"
)

// The block-dirty-bitmap commands (QEMU 7.2's qapi/block-core.json), alone
// and as transaction actions; the block layer does them (block/bitmap.go).

var (
	tBlockDirtyBitmap    = object("BlockDirtyBitmap", req("node", tStr), req("name", tStr))
	tBlockDirtyBitmapAdd = object("BlockDirtyBitmapAdd",
		req("node", tStr), req("name", tStr), opt("granularity", tInt),
		opt("persistent", tBool), opt("disabled", tBool))
	tBlockDirtyBitmapOrStr = alternate("BlockDirtyBitmapOrStr", tStr, tBlockDirtyBitmap)
	tBlockDirtyBitmapMerge = object("BlockDirtyBitmapMerge",
		req("node", tStr), req("target", tStr), req("bitmaps", arrayOf(tBlockDirtyBitmapOrStr)))

	tBlockDirtyInfo = object("BlockDirtyInfo",
		opt("name", tStr), req("count", tInt), req("granularity", tInt), req("recording", tBool),
		req("busy", tBool), req("persistent", tBool), opt("inconsistent", tBool))
)

// bitmapOps maps each command to its action's Op and argument type.
var bitmapOps = []struct {
	cmd, op string
	args    *qtype
}{
	{"block-dirty-bitmap-add", "add", tBlockDirtyBitmapAdd},
	{"block-dirty-bitmap-remove", "remove", tBlockDirtyBitmap},
	{"block-dirty-bitmap-clear", "clear", tBlockDirtyBitmap},
	{"block-dirty-bitmap-enable", "enable", tBlockDirtyBitmap},
	{"block-dirty-bitmap-disable", "disable", tBlockDirtyBitmap},
	{"block-dirty-bitmap-merge", "merge", tBlockDirtyBitmapMerge},
}

func init() {
	tBlockDeviceInfo.members = append(tBlockDeviceInfo.members, opt("dirty-bitmaps", arrayOf(tBlockDirtyInfo)))
}

func bitmapCommands() map[string]command {
	out := map[string]command{}
	for _, b := range bitmapOps {
		op := b.op
		out[b.cmd] = command{params: b.args.members, run: func(c *call, args Args) (any, error) {
			a, err := bitmapAction(op, args)
			if err != nil {
				return nil, err
			}
			return nil, c.mon.srv.graph.Bitmaps(a)
		}}
	}
	return out
}

// bitmapVariants are the transaction actions of the bitmap commands.
func bitmapVariants() (kinds []string, variants []variant) {
	wrapper := map[string]string{"add": "BlockDirtyBitmapAddWrapper", "merge": "BlockDirtyBitmapMergeWrapper"}
	for _, b := range bitmapOps {
		w, ok := wrapper[b.op]
		if !ok {
			w = "BlockDirtyBitmapWrapper"
		}
		kinds = append(kinds, b.cmd)
		variants = append(variants, variant{b.cmd, object(w, req("data", b.args))})
	}
	return kinds, variants
}

// transactionBitmapAction is the block layer's action for a checked
// transaction action of type typ, if it is a bitmap one.
func transactionBitmapAction(typ string, data map[string]any) (*block.SnapshotAction, error) {
	for _, b := range bitmapOps {
		if b.cmd == typ {
			a, err := bitmapAction(b.op, data)
			if err != nil {
				return nil, err
			}
			return &block.SnapshotAction{Bitmap: &a}, nil
		}
	}
	return nil, nil
}

// bitmapAction turns checked arguments into the block layer's action.
func bitmapAction(op string, args Args) (block.BitmapAction, error) {
	a := block.BitmapAction{Op: op}
	a.Node, _ = args.Str("node")
	a.Name, _ = args.Str("name")
	switch op {
	case "add":
		g, ok, err := uintArg(args, "granularity")
		if err != nil || g > math.MaxUint32 {
			return a, genericError("Parameter 'granularity' expects uint32_t")
		}
		a.Granularity, a.HasGranularity = int64(g), ok
		a.Persistent, _ = args["persistent"].(bool)
		a.Disabled, _ = args["disabled"].(bool)
	case "merge":
		a.Name, _ = args.Str("target")
		a.Sources = bitmapRefs(args["bitmaps"])
	}
	return a, nil
}

// bitmapRefs is a checked [BlockDirtyBitmapOrStr].
func bitmapRefs(v any) []block.BitmapRef {
	list, _ := v.([]any)
	refs := make([]block.BitmapRef, 0, len(list))
	for _, e := range list {
		switch e := e.(type) {
		case string:
			refs = append(refs, block.BitmapRef{Name: e})
		case map[string]any:
			node, _ := e["node"].(string)
			name, _ := e["name"].(string)
			refs = append(refs, block.BitmapRef{Node: node, Name: name})
		}
	}
	return refs
}

// dirtyBitmapsInfo is a node's "dirty-bitmaps", members in QEMU's order;
// nil when it has none (QEMU then leaves the member out).
func dirtyBitmapsInfo(n *block.Node) []any {
	var out []any
	for _, b := range n.DirtyBitmaps() {
		var o Obj
		if b.Name != "" {
			o = append(o, Member{"name", b.Name})
		}
		o = append(o, Member{"recording", b.Recording}, Member{"persistent", b.Persistent},
			Member{"busy", b.Busy}, Member{"granularity", b.Granularity}, Member{"count", b.Count})
		out = append(out, o)
	}
	return out
}
