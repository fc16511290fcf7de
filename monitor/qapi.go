package monitor

// QAPI types, the one description of a command's arguments and reply and
// of an event's data: the dispatcher checks arguments against them and
// query-qmp-schema renders them, so the two cannot disagree.

// metaType is a QAPI type's kind, as SchemaInfo's meta-type names it.
type metaType int

const (
	metaBuiltin metaType = iota
	metaEnum
	metaArray
	metaObject
	metaAlternate
)

var metaTypeNames = [...]string{metaBuiltin: "builtin", metaEnum: "enum", metaArray: "array", metaObject: "object", metaAlternate: "alternate"}

// qtype is one QAPI type. Types are compared by pointer: each is declared
// once, as a package-level value or built once from the block layer's
// driver tables.
type qtype struct {
	meta metaType
	name string // builtin: QAPI's name ("str"); otherwise QAPI's name, for readers of this file only (the schema masks it)
	json string // builtin: its SchemaInfo json-type; also the word in "expected: ..." errors

	values   []string // enum
	elem     *qtype   // array
	members  []param  // object: its members (the base's first, for a union)
	tag      string   // object: the member whose value picks a variant
	variants []variant
	alts     []*qtype // alternate

	// blockOptions marks BlockdevOptions: the dispatcher checks only that
	// it is an object; the block layer checks the rest, against the same
	// driver tables the schema is built from.
	blockOptions bool
}

// param is one member of an object type: a command argument, a reply's or
// an event's member.
type param struct {
	name     string
	typ      *qtype
	optional bool
}

type variant struct {
	tag string
	typ *qtype
}

// The builtin types.
var (
	tStr    = &qtype{meta: metaBuiltin, name: "str", json: "string"}
	tInt    = &qtype{meta: metaBuiltin, name: "int", json: "int"}
	tBool   = &qtype{meta: metaBuiltin, name: "bool", json: "boolean"}
	tNumber = &qtype{meta: metaBuiltin, name: "number", json: "number"}
	tNull   = &qtype{meta: metaBuiltin, name: "null", json: "null"}
	tAny    = &qtype{meta: metaBuiltin, name: "any", json: "value"}
)

// tEmpty is the object without members: no arguments, or an empty reply.
var tEmpty = object("")

func enum(name string, values ...string) *qtype {
	return &qtype{meta: metaEnum, name: name, values: values}
}

func arrayOf(t *qtype) *qtype { return &qtype{meta: metaArray, elem: t} }

func object(name string, members ...param) *qtype {
	return &qtype{meta: metaObject, name: name, members: members}
}

func alternate(name string, alts ...*qtype) *qtype {
	return &qtype{meta: metaAlternate, name: name, alts: alts}
}

// req and opt declare a required and an optional member.
func req(name string, t *qtype) param { return param{name: name, typ: t} }
func opt(name string, t *qtype) param { return param{name: name, typ: t, optional: true} }

// wireName is the word QEMU's input visitor uses for t in "Invalid
// parameter type for 'x', expected: ..." errors.
func (t *qtype) wireName() string {
	switch t.meta {
	case metaBuiltin:
		if t == tInt {
			return "integer"
		}
		return t.json
	case metaEnum:
		return "string"
	case metaArray:
		return "array"
	}
	return "object"
}
