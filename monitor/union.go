package monitor

import "slices"

// checkUnion checks an object argument of a union type as QEMU's input
// visitor does: the base members first (the tag among them), then the
// members of the variant the tag picks, unexpected members last. Members
// are named "outer.member", except in the tag's enum error, where QEMU's
// enum visitor knows only the member's own name.
func checkUnion(t *qtype, raw map[string]any, outer string) (map[string]any, error) {
	params := slices.Clone(t.members)
	for _, p := range t.members {
		v, present := raw[p.name]
		if p.name != t.tag || !present {
			continue
		}
		if s, isStr := v.(string); isStr && p.typ.meta == metaEnum && !slices.Contains(p.typ.values, s) {
			return nil, genericError("Parameter '%s' does not accept value '%s'", p.name, s)
		}
		for _, vt := range t.variants {
			if vt.tag == v {
				params = append(params, vt.typ.members...)
			}
		}
	}
	return checkNested(params, raw, outer)
}
