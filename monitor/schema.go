package monitor

import (
	"maps"
	"slices"
	"strconv"

	"minivmm/block"
)

// query-qmp-schema: the command table, the event table and the types they
// use, rendered as QEMU's SchemaInfo list. As in QEMU, every type but the
// builtins is named by a number ("0" is the empty object), so clients
// cannot come to depend on type names.

func queryQMPSchema(*call, Args) (any, error) { return buildSchema(), nil }

type schemaBuilder struct {
	names  map[*qtype]string
	arrays map[string]bool // array names already queued
	queue  []*qtype        // types named but not yet rendered, in naming order
	next   int
	blockT *qtype // BlockdevOptions, built from the block layer's tables
}

func buildSchema() []any {
	b := &schemaBuilder{names: map[*qtype]string{}, arrays: map[string]bool{}}
	b.ref(tEmpty) // "0", as in QEMU
	var out []any
	for _, name := range slices.Sorted(maps.Keys(commands)) {
		cmd := commands[name]
		arg := object("", cmd.params...)
		if len(cmd.params) == 0 {
			arg = tEmpty
		}
		if cmd.raw && len(cmd.params) == 0 {
			arg = tBlockdevOptions
		}
		if cmd.union != nil {
			arg = cmd.union
		}
		ret := cmd.ret
		if ret == nil {
			ret = tEmpty
		}
		e := Obj{{"name", name}, {"ret-type", b.ref(ret)}, {"meta-type", "command"}, {"arg-type", b.ref(arg)}}
		if allowOOB(name) {
			e = append(e, Member{"allow-oob", true})
		}
		out = append(out, e)
	}
	for _, name := range slices.Sorted(maps.Keys(events)) {
		data := events[name]
		if data == nil {
			data = tEmpty
		}
		out = append(out, Obj{{"name", name}, {"meta-type", "event"}, {"arg-type", b.ref(data)}})
	}
	for len(b.queue) > 0 {
		t := b.queue[0]
		b.queue = b.queue[1:]
		out = append(out, b.render(t))
	}
	return out
}

// ref returns t's schema name, queueing t for rendering the first time.
func (b *schemaBuilder) ref(t *qtype) string {
	if t.blockOptions {
		if b.blockT == nil {
			b.blockT = &qtype{meta: metaObject} // named before it is filled: it refers to itself
			b.names[t] = b.newName(b.blockT)
			blockdevSchema(b.blockT)
		}
		return b.names[t]
	}
	if name, ok := b.names[t]; ok {
		return name
	}
	var name string
	switch t.meta {
	case metaBuiltin:
		name = t.name
		b.names[t] = name
		b.queue = append(b.queue, t)
	case metaArray:
		// Arrays are named by their element type, so two declarations
		// of one array type are one entity.
		name = "[" + b.ref(t.elem) + "]"
		if !b.arrays[name] {
			b.arrays[name] = true
			b.queue = append(b.queue, t)
		}
		b.names[t] = name
	default:
		name = b.newName(t)
		b.names[t] = name
	}
	return name
}

func (b *schemaBuilder) newName(t *qtype) string {
	name := strconv.Itoa(b.next)
	b.next++
	b.names[t] = name
	b.queue = append(b.queue, t)
	return name
}

// render is one SchemaInfo, members in the order QEMU writes them.
func (b *schemaBuilder) render(t *qtype) Obj {
	name := b.names[t]
	switch t.meta {
	case metaBuiltin:
		return Obj{{"name", name}, {"json-type", t.json}, {"meta-type", "builtin"}}
	case metaEnum:
		members := make([]any, len(t.values))
		values := make([]any, len(t.values))
		for i, v := range t.values {
			members[i], values[i] = Obj{{"name", v}}, v
		}
		return Obj{{"name", name}, {"members", members}, {"meta-type", "enum"}, {"values", values}}
	case metaArray:
		return Obj{{"name", name}, {"element-type", b.ref(t.elem)}, {"meta-type", "array"}}
	case metaAlternate:
		members := make([]any, len(t.alts))
		for i, a := range t.alts {
			members[i] = Obj{{"type", b.ref(a)}}
		}
		return Obj{{"name", name}, {"members", members}, {"meta-type", "alternate"}}
	}
	e := Obj{{"name", name}}
	if t.tag != "" {
		variants := make([]any, len(t.variants))
		for i, v := range t.variants {
			variants[i] = Obj{{"case", v.tag}, {"type", b.ref(v.typ)}}
		}
		e = append(e, Member{"tag", t.tag}, Member{"variants", variants})
	}
	members := make([]any, len(t.members))
	for i, m := range t.members {
		if m.optional {
			members[i] = Obj{{"name", m.name}, {"default", nil}, {"type", b.ref(m.typ)}}
		} else {
			members[i] = Obj{{"name", m.name}, {"type", b.ref(m.typ)}}
		}
	}
	return append(e, Member{"members", members}, Member{"meta-type", "object"})
}

// blockdevSchema fills u with BlockdevOptions as the block layer checks
// it: a union on "driver" of the registered drivers, whose base is the
// options every driver takes and whose variants are each driver's own.
func blockdevSchema(u *qtype) {
	drivers := block.Drivers()
	schemas := make([]map[string]block.OptType, len(drivers))
	required := make([][]string, len(drivers))
	for i, name := range drivers {
		d, _ := block.LookupDriver(name)
		schemas[i], required[i] = d.Schema()
	}
	ref := alternate("BlockdevRef", u, tStr)
	refOrNull := alternate("BlockdevRefOrNull", u, tStr, tNull)
	cache := object("BlockdevCacheOptions")
	for _, k := range slices.Sorted(maps.Keys(block.CacheOptions())) {
		cache.members = append(cache.members, opt(k, tStr))
	}
	typeOf := func(key string, t block.OptType) *qtype {
		switch t {
		case block.OptString:
			return tStr
		case block.OptBool:
			return tBool
		case block.OptInt, block.OptSize:
			return tInt
		case block.OptChild:
			if key == "backing" { // the only child the block layer lets be null
				return refOrNull
			}
			return ref
		case block.OptObject:
			if key == "cache" {
				return cache
			}
		}
		return tAny
	}
	for i, m := range cache.members {
		cache.members[i].typ = typeOf(m.name, block.CacheOptions()[m.name])
	}

	// The base: what every driver takes; "driver" is the tag.
	common := map[string]block.OptType{}
	if len(schemas) > 0 {
		common = maps.Clone(schemas[0])
		for _, s := range schemas[1:] {
			maps.DeleteFunc(common, func(k string, _ block.OptType) bool { _, ok := s[k]; return !ok })
		}
	}
	u.tag = "driver"
	u.members = []param{req("driver", enum("BlockdevDriver", drivers...))}
	for _, k := range slices.Sorted(maps.Keys(common)) {
		if k != "driver" {
			u.members = append(u.members, opt(k, typeOf(k, common[k])))
		}
	}
	for i, name := range drivers {
		v := object("BlockdevOptions-" + name)
		for _, k := range slices.Sorted(maps.Keys(schemas[i])) {
			if _, base := common[k]; base {
				continue
			}
			p := opt(k, typeOf(k, schemas[i][k]))
			p.optional = !slices.Contains(required[i], k)
			v.members = append(v.members, p)
		}
		u.variants = append(u.variants, variant{name, v})
	}
}
