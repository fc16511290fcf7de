package cmdline

import (
	"fmt"

	"minivmm/block"
)

// bitmapRefs takes a list of BlockDirtyBitmapOrStr: each element a
// bitmap's name (bitmaps.0=B) or a node and a name
// (bitmaps.0.node=N,bitmaps.0.name=B).
func (v *kvVisitor) bitmapRefs(k string) ([]block.BitmapRef, error) {
	x, ok, err := v.take(k, false)
	if err != nil || !ok {
		return nil, err
	}
	l, isList := x.([]any)
	if !isList {
		return nil, fmt.Errorf("Invalid parameter type for '%s', expected: array", v.name(k))
	}
	out := make([]block.BitmapRef, 0, len(l))
	for i, e := range l {
		switch e := e.(type) {
		case string:
			out = append(out, block.BitmapRef{Name: e})
		case map[string]any:
			ev := &kvVisitor{m: e, prefix: fmt.Sprintf("%s.%d.", v.name(k), i)}
			var r block.BitmapRef
			if r.Node, err = ev.str("node", true); err != nil {
				return nil, err
			}
			if r.Name, err = ev.str("name", true); err != nil {
				return nil, err
			}
			if err := ev.done(); err != nil {
				return nil, err
			}
			out = append(out, r)
		default:
			// QEMU's keyval visitor names no list element here.
			return nil, fmt.Errorf("Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr")
		}
	}
	return out, nil
}
