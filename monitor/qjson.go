package monitor

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Obj is a JSON object whose members keep their order, so replies read as
// QEMU's do ("return" before "id", "class" before "desc").
type Obj []Member

// Member is one name/value pair of an [Obj].
type Member struct {
	Key   string
	Value any
}

// encode writes v as QEMU writes QMP: ", " and ": " separators, every
// non-ASCII character escaped, one line unless pretty.
func encode(b *strings.Builder, v any, pretty bool, indent int) {
	newline := func(level int) {
		if pretty {
			b.WriteByte('\n')
			b.WriteString(strings.Repeat("    ", level))
		}
	}
	sep := func(first bool) {
		if !first {
			b.WriteByte(',')
			if !pretty {
				b.WriteByte(' ')
			}
		}
		newline(indent + 1)
	}
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case int:
		b.WriteString(strconv.Itoa(v))
	case int64:
		b.WriteString(strconv.FormatInt(v, 10))
	case uint64:
		b.WriteString(strconv.FormatUint(v, 10))
	case json.Number: // a number the client sent, written back as QEMU's parser stored it
		b.WriteString(qemuNumber(v.String()))
	case float64:
		b.WriteString(strconv.FormatFloat(v, 'g', 17, 64))
	case string:
		quote(b, v)
	case Obj:
		b.WriteByte('{')
		for i, m := range v {
			sep(i == 0)
			quote(b, m.Key)
			b.WriteString(": ")
			encode(b, m.Value, pretty, indent+1)
		}
		if len(v) > 0 {
			newline(indent)
		}
		b.WriteByte('}')
	case map[string]any: // an "id" echoed back as the client sent it
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		obj := make(Obj, 0, len(v))
		for _, k := range keys {
			obj = append(obj, Member{k, v[k]})
		}
		encode(b, obj, pretty, indent)
	case []any:
		b.WriteByte('[')
		for i, e := range v {
			sep(i == 0)
			encode(b, e, pretty, indent+1)
		}
		if len(v) > 0 {
			newline(indent)
		}
		b.WriteByte(']')
	case []Obj:
		list := make([]any, len(v))
		for i := range v {
			list[i] = v[i]
		}
		encode(b, list, pretty, indent)
	default:
		panic(fmt.Sprintf("monitor: cannot encode %T", v))
	}
}

// quote writes s as a JSON string the way QEMU's to_json does: the short
// escapes, \u00XX for other control characters, and \uXXXX (surrogate pairs
// beyond the BMP) for everything that is not ASCII.
func quote(b *strings.Builder, s string) {
	const hex = "0123456789ABCDEF" // QEMU writes upper-case escapes
	u4 := func(r rune) {
		b.WriteString(`\u`)
		for shift := 12; shift >= 0; shift -= 4 {
			b.WriteByte(hex[(r>>shift)&0xf])
		}
	}
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			u4(r)
		case r < utf8.RuneSelf:
			b.WriteByte(byte(r))
		case r > 0xffff:
			r -= 0x10000
			u4(0xd800 + (r >> 10))
			u4(0xdc00 + (r & 0x3ff))
		default:
			u4(r)
		}
	}
	b.WriteByte('"')
}

// qemuNumber is how QEMU writes back a JSON number it parsed: an integer
// literal as int64 when it fits, else as uint64 when it fits, and anything
// else as a double printed with "%.17g" (1.0 -> 1, -0 -> 0, 2^64 ->
// 1.8446744073709552e+19). Out of double range QEMU writes "inf", which is
// not JSON; the text is kept as sent then.
func qemuNumber(s string) string {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return strconv.FormatInt(i, 10)
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return strconv.FormatUint(u, 10)
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return s
	}
	return strconv.FormatFloat(f, 'g', 17, 64)
}
