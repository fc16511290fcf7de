package quorum

import (
	"errors"
	"strconv"

	"minivmm/block"
)

// Errors of the "children" option, in QEMU's words.
var (
	errNotArray   = errors.New("Option children is not a valid array")
	errNoChildren = errors.New("Number of provided children must be 1 or more")
)

// parseChildren reads the "children" option: a list (JSON, QMP) or an
// object whose keys are "0", "1", ... (keyval's children.0.driver=...,
// json:'s dotted keys), as QEMU's qdict_array_entries counts it: the
// indices must run from 0 without a gap and nothing else may be there.
// Each entry is a node-name (string) or an inline node's Options.
func parseChildren(v any) ([]any, error) {
	var entries []any
	switch v := v.(type) {
	case nil:
	case []any:
		entries = v
	case block.Options:
		for i := 0; ; i++ {
			e, ok := v[strconv.Itoa(i)]
			if !ok {
				break
			}
			entries = append(entries, e)
		}
		if len(entries) != len(v) {
			return nil, errNotArray
		}
	case map[string]any:
		return parseChildren(block.Options(v))
	default:
		return nil, errNotArray
	}
	if len(entries) == 0 {
		return nil, errNoChildren
	}
	refs := make([]any, len(entries))
	for i, e := range entries {
		switch e := e.(type) {
		case block.Options:
			refs[i] = e
		case map[string]any:
			refs[i] = block.Options(e)
		default:
			// A node-name: a string, as JSON or keyval gave it.
			name, err := block.Options{"children." + strconv.Itoa(i): e}.String("children."+strconv.Itoa(i), "")
			if err != nil {
				return nil, err
			}
			refs[i] = name
		}
	}
	return refs, nil
}
