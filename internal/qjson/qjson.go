// Package qjson writes JSON strings the way QEMU's JSON writer does, for
// QMP replies and qemu-img's output alike.
package qjson

import (
	"strings"
	"unicode/utf8"
)

// Quote returns s as a JSON string the way QEMU's to_json writes it: the
// short escapes, \u00XX for other control characters and DEL, and \uXXXX
// (upper-case hex; surrogate pairs beyond the BMP) for everything that is
// not ASCII.
func Quote(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
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
	return b.String()
}
