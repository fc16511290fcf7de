package monitor

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"minivmm/internal/qjson"
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
// non-ASCII character escaped, one line unless pretty. Pretty is QEMU's
// json-writer as its monitor sends it: a container's end on a line of its
// own even when empty ("{\r\n    }"), every newline CRLF (the monitor
// turns each \n into \r\n).
func encode(b *strings.Builder, v any, pretty bool, indent int) {
	newline := func(level int) {
		if pretty {
			b.WriteString("\r\n")
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
		newline(indent)
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
		newline(indent)
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

func quote(b *strings.Builder, s string) { b.WriteString(qjson.Quote(s)) }

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
