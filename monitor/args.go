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
)

func genericError(format string, a ...any) *Error {
	return &Error{Class: GenericError, Desc: fmt.Sprintf(format, a...)}
}

// argType is the QAPI type of a command argument.
type argType int

const (
	argInt argType = iota
	argStr
	argBool
	argStrList
	argObjList
)

var argTypeNames = [...]string{argInt: "integer", argStr: "string", argBool: "boolean", argStrList: "array", argObjList: "array"}

// param declares one argument of a command.
type param struct {
	name     string
	typ      argType
	optional bool
}

// Args are a command's checked arguments: int64, string, bool or []string
// by their declared type; absent optional ones are missing from the map.
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
		conv, ok := convertArg(p.typ, v)
		if !ok {
			name, want := p.name, argTypeNames[p.typ]
			if list, isList := v.([]any); isList && p.typ == argStrList {
				// A list is fine, an element is not: QEMU names the element.
				i := slices.IndexFunc(list, func(e any) bool { _, ok := e.(string); return !ok })
				name, want = fmt.Sprintf("%s[%d]", p.name, i), argTypeNames[argStr]
			}
			return nil, genericError("Invalid parameter type for '%s', expected: %s", name, want)
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

func convertArg(t argType, v any) (any, bool) {
	switch t {
	case argInt:
		n, ok := v.(json.Number)
		if !ok {
			return nil, false
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		return i, err == nil
	case argStr:
		s, ok := v.(string)
		return s, ok
	case argBool:
		b, ok := v.(bool)
		return b, ok
	case argStrList:
		list, ok := v.([]any)
		if !ok {
			return nil, false
		}
		out := make([]string, len(list))
		for i, e := range list {
			if out[i], ok = e.(string); !ok {
				return nil, false
			}
		}
		return out, true
	case argObjList:
		list, ok := v.([]any)
		if !ok {
			return nil, false
		}
		out := make([]map[string]any, len(list))
		for i, e := range list {
			if out[i], ok = e.(map[string]any); !ok {
				return nil, false
			}
		}
		return out, true
	}
	return nil, false
}
