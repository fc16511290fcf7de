package monitor

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
)

// Error is a QMP error reply: QEMU's class and a sentence.
type Error struct {
	Class string
	Desc  string
}

func (e *Error) Error() string { return e.Desc }

// Error classes QEMU uses.
const (
	GenericError    = "GenericError"
	CommandNotFound = "CommandNotFound"
	DeviceNotActive = "DeviceNotActive" // a missing block job
	DeviceNotFound  = "DeviceNotFound"  // a missing device, node or QOM path
)

func genericError(format string, a ...any) *Error {
	return &Error{Class: GenericError, Desc: fmt.Sprintf(format, a...)}
}

// Args are a command's checked arguments: int64, string, bool, []string
// (arrays of strings or enums), []map[string]any (arrays of objects),
// map[string]any (objects) or any value as sent (QAPI 'any'). Absent
// optional ones are missing from the map.
type Args map[string]any

// Int returns an optional integer argument.
func (a Args) Int(name string) (int64, bool) { v, ok := a[name].(int64); return v, ok }

// Str returns an optional string argument.
func (a Args) Str(name string) (string, bool) { v, ok := a[name].(string); return v, ok }

// checkArgs validates raw arguments against params in QEMU's order:
// declared members first (missing, then type), unexpected ones last.
func checkArgs(params []param, raw map[string]any) (Args, error) {
	out := Args{}
	for _, p := range params {
		v, present := raw[p.name]
		if !present {
			if !p.optional {
				return nil, genericError("Parameter '%s' is missing", p.name)
			}
			continue
		}
		conv, err := convertArg(p.typ, v, p.name)
		if err != nil {
			return nil, err
		}
		out[p.name] = conv
	}
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		if !declared(params, name) {
			return nil, genericError("Parameter '%s' is unexpected", name)
		}
	}
	return out, nil
}

func declared(params []param, name string) bool {
	for _, p := range params {
		if p.name == name {
			return true
		}
	}
	return false
}

// convertArg checks v, named name in errors, against t as QEMU's input
// visitor does.
func convertArg(t *qtype, v any, name string) (any, error) {
	bad := genericError("Invalid parameter type for '%s', expected: %s", name, t.wireName())
	switch t.meta {
	case metaBuiltin:
		switch t {
		case tInt:
			if n, ok := v.(json.Number); ok {
				if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
					return i, nil
				}
			}
		case tStr:
			if s, ok := v.(string); ok {
				return s, nil
			}
		case tBool:
			if b, ok := v.(bool); ok {
				return b, nil
			}
		case tNumber:
			if n, ok := v.(json.Number); ok {
				return n, nil
			}
		case tNull:
			if v == nil {
				return nil, nil
			}
		case tAny:
			return v, nil
		}
		return nil, bad
	case metaEnum:
		s, ok := v.(string)
		if !ok {
			return nil, bad
		}
		if !slices.Contains(t.values, s) {
			return nil, genericError("Parameter '%s' does not accept value '%s'", name, s)
		}
		return s, nil
	case metaArray:
		list, ok := v.([]any)
		if !ok {
			return nil, bad
		}
		var strs []string
		var objs []map[string]any
		for i, e := range list {
			// QEMU names an element "name[i]" for a type error, but its
			// enum visitor has no name for it and prints 'null'.
			elemName := fmt.Sprintf("%s[%d]", name, i)
			if _, isStr := e.(string); isStr && t.elem.meta == metaEnum || t.elem.meta == metaAlternate && t.elem.alt(e) == nil {
				elemName = "null"
			}
			c, err := convertArg(t.elem, e, elemName)
			if err != nil {
				return nil, err
			}
			switch c := c.(type) {
			case string:
				strs = append(strs, c)
			case map[string]any:
				objs = append(objs, c)
			}
		}
		switch t.elem.meta {
		case metaEnum:
			return orEmpty(strs), nil
		case metaObject:
			return orEmpty(objs), nil
		}
		if t.elem == tStr {
			return orEmpty(strs), nil
		}
		return list, nil
	case metaObject:
		m, ok := v.(map[string]any)
		if !ok {
			return nil, bad
		}
		if t.blockOptions {
			return m, nil
		}
		if t.tag != "" {
			return checkUnion(t, m, name)
		}
		return checkNested(t.members, m, name)
	case metaAlternate:
		if a := t.alt(v); a != nil {
			return convertArg(a, v, name)
		}
		return nil, genericError("Invalid parameter type for '%s', expected: %s", name, t.name)
	}
	return nil, bad
}

// alt is the branch of alternate t that v's JSON type picks, if any.
func (t *qtype) alt(v any) *qtype {
	for _, a := range t.alts {
		switch v.(type) {
		case string:
			if a == tStr || a.meta == metaEnum {
				return a
			}
		case map[string]any:
			if a.meta == metaObject {
				return a
			}
		case bool:
			if a == tBool {
				return a
			}
		case json.Number:
			if a == tInt || a == tNumber {
				return a
			}
		case nil:
			if a == tNull {
				return a
			}
		}
	}
	return nil
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// checkNested checks an object argument's members, naming them
// "outer.member" in errors as QEMU does.
func checkNested(params []param, raw map[string]any, outer string) (map[string]any, error) {
	out := map[string]any{}
	for _, p := range params {
		v, present := raw[p.name]
		if !present {
			if !p.optional {
				return nil, genericError("Parameter '%s' is missing", memberName(outer, p.name))
			}
			continue
		}
		c, err := convertArg(p.typ, v, memberName(outer, p.name))
		if err != nil {
			return nil, err
		}
		out[p.name] = c
	}
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		if !declared(params, name) {
			return nil, genericError("Parameter '%s' is unexpected", memberName(outer, name))
		}
	}
	return out, nil
}

// memberName is "outer.name", or name for a command's own arguments
// (outer empty: a command whose arguments are a union).
func memberName(outer, name string) string {
	if outer == "" {
		return name
	}
	return outer + "." + name
}
