package jsonval

import (
	"encoding/json"
	"sync"
	"unicode/utf8"
)

// maxFastDepth bounds the fast path's recursion. A hostile client may nest
// thousands deep; such input goes to the token path, whose stack is on the
// heap, rather than growing this goroutine's stack.
const maxFastDepth = 64

// maxSharedInput is the largest input whose decoded strings all point into
// one copy of it: one allocation instead of one per string. Larger inputs
// copy each string, so that a small string kept from a big message does not
// keep the whole message alive.
const maxSharedInput = 4 << 10

// maxPooledScratch caps the scratch buffers a pooled decoder keeps, so that
// one huge message does not pin its memory for good.
const maxPooledScratch = 1 << 10

// fastDecoder decodes the common case, plain JSON in ASCII, in one pass.
// It accepts only input that it is certain the token path accepts and
// decodes to the same values; on anything else it gives up, and the token
// path decodes the input again and words any error as it always has.
type fastDecoder struct {
	data []byte
	src  string // data as a string when shared (see maxSharedInput), else ""
	i    int
	buf  []byte // unescaped string being built
	// Members and elements wait here until their container is complete, so
	// that it is allocated once at its final size.
	keys []string
	vals []any
}

var fastDecoders = sync.Pool{New: func() any { return new(fastDecoder) }}

// decodeFast decodes data as the token path would, or reports false if it
// cannot be sure it would.
func decodeFast(data []byte) (any, bool) {
	d := fastDecoders.Get().(*fastDecoder)
	d.data, d.i = data, 0
	if len(data) <= maxSharedInput {
		d.src = string(data)
	}
	v, ok := d.value(0)
	if ok {
		d.skipSpace()
		ok = d.i == len(data)
	}
	d.release()
	if !ok {
		return nil, false
	}
	return v, true
}

// release returns d to the pool holding no reference to the input or to
// decoded values.
func (d *fastDecoder) release() {
	clear(d.keys) // only left non-empty when giving up
	clear(d.vals)
	d.keys, d.vals = d.keys[:0], d.vals[:0]
	d.data, d.src = nil, ""
	if cap(d.buf) > maxPooledScratch || cap(d.keys) > maxPooledScratch || cap(d.vals) > maxPooledScratch {
		return
	}
	fastDecoders.Put(d)
}

// isSpace is encoding/json's set, not QEMU's: the token path decides.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

func (d *fastDecoder) skipSpace() {
	for d.i < len(d.data) && isSpace(d.data[d.i]) {
		d.i++
	}
}

// substr returns data[start:end] as a string.
func (d *fastDecoder) substr(start, end int) string {
	if d.src != "" {
		return d.src[start:end]
	}
	return string(d.data[start:end])
}

// value decodes the value at d.i, after any white space. depth counts the
// containers around it.
func (d *fastDecoder) value(depth int) (any, bool) {
	d.skipSpace()
	if d.i >= len(d.data) {
		return nil, false
	}
	switch c := d.data[d.i]; {
	case c == '{':
		return d.object(depth + 1)
	case c == '[':
		return d.array(depth + 1)
	case c == '"':
		s, ok := d.str()
		if !ok {
			return nil, false
		}
		return s, true
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return d.number()
	}
	return nil, false
}

// literal consumes word. What follows it is the caller's to check: a
// literal run into more letters is then not followed by , ] } or the end.
func (d *fastDecoder) literal(word string) bool {
	if len(d.data)-d.i < len(word) || string(d.data[d.i:d.i+len(word)]) != word {
		return false
	}
	d.i += len(word)
	return true
}

// number consumes a number of exactly the JSON grammar. The token path
// keeps numbers as their text, so the text is the value.
func (d *fastDecoder) number() (any, bool) {
	data, start, i := d.data, d.i, d.i
	if data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		i = digits(data, i)
	default:
		return nil, false
	}
	if i < len(data) && data[i] == '.' {
		if i = digits(data, i+1); data[i-1] == '.' {
			return nil, false
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := digits(data, i)
		if j == i {
			return nil, false
		}
		i = j
	}
	d.i = i
	return json.Number(d.substr(start, i)), true
}

// digits returns the index of the first non-digit at or after i.
func digits(data []byte, i int) int {
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		i++
	}
	return i
}

// str consumes the string at d.i. It gives up on anything but printable
// ASCII and the escapes whose meaning is beyond doubt: encoding/json turns
// invalid UTF-8 and lone surrogates into U+FFFD, which is not worth
// copying here.
func (d *fastDecoder) str() (string, bool) {
	data := d.data
	start := d.i + 1
	i := start
	for ; i < len(data); i++ {
		c := data[i]
		if c == '"' {
			d.i = i + 1
			return d.substr(start, i), true
		}
		if c == '\\' {
			break
		}
		if c < 0x20 || c >= utf8.RuneSelf {
			return "", false
		}
	}
	buf := append(d.buf[:0], data[start:i]...)
	for i < len(data) {
		c := data[i]
		switch {
		case c == '"':
			d.i, d.buf = i+1, buf
			return string(buf), true
		case c < 0x20 || c >= utf8.RuneSelf:
			return "", false
		case c != '\\':
			buf = append(buf, c)
			i++
			continue
		}
		if i+1 >= len(data) {
			return "", false
		}
		switch e := data[i+1]; e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r := hex4(data[i+2:])
			if r < 0 || r >= 0xd800 && r <= 0xdfff {
				return "", false
			}
			buf = utf8.AppendRune(buf, r)
			i += 4
		default:
			return "", false
		}
		i += 2
	}
	return "", false
}

// hex4 decodes the four hex digits at the start of b, or returns -1.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// object consumes the object at d.i. A duplicate key is left to the token
// path, which words the error.
func (d *fastDecoder) object(depth int) (any, bool) {
	if depth > maxFastDepth {
		return nil, false
	}
	d.i++
	d.skipSpace()
	if d.i < len(d.data) && d.data[d.i] == '}' {
		d.i++
		return map[string]any{}, true
	}
	kbase, vbase := len(d.keys), len(d.vals)
	for {
		d.skipSpace()
		if d.i >= len(d.data) || d.data[d.i] != '"' {
			return nil, false
		}
		k, ok := d.str()
		if !ok {
			return nil, false
		}
		d.skipSpace()
		if d.i >= len(d.data) || d.data[d.i] != ':' {
			return nil, false
		}
		d.i++
		v, ok := d.value(depth)
		if !ok {
			return nil, false
		}
		d.keys, d.vals = append(d.keys, k), append(d.vals, v)
		if !d.next('}') {
			return nil, false
		}
		if d.data[d.i-1] == '}' {
			break
		}
	}
	keys, vals := d.keys[kbase:], d.vals[vbase:]
	m := make(map[string]any, len(keys))
	for j, k := range keys {
		m[k] = vals[j]
	}
	clear(keys)
	clear(vals)
	d.keys, d.vals = d.keys[:kbase], d.vals[:vbase]
	if len(m) != len(keys) {
		return nil, false
	}
	return m, true
}

// array consumes the array at d.i.
func (d *fastDecoder) array(depth int) (any, bool) {
	if depth > maxFastDepth {
		return nil, false
	}
	d.i++
	d.skipSpace()
	if d.i < len(d.data) && d.data[d.i] == ']' {
		d.i++
		return []any{}, true
	}
	vbase := len(d.vals)
	for {
		v, ok := d.value(depth)
		if !ok {
			return nil, false
		}
		d.vals = append(d.vals, v)
		if !d.next(']') {
			return nil, false
		}
		if d.data[d.i-1] == ']' {
			break
		}
	}
	vals := d.vals[vbase:]
	l := make([]any, len(vals))
	copy(l, vals)
	clear(vals)
	d.vals = d.vals[:vbase]
	return l, true
}

// next consumes the comma or the closing delimiter after a member or an
// element, reporting false if neither is there.
func (d *fastDecoder) next(closing byte) bool {
	d.skipSpace()
	if d.i >= len(d.data) {
		return false
	}
	if c := d.data[d.i]; c == ',' || c == closing {
		d.i++
		return true
	}
	return false
}
