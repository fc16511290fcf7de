package qtool

import "strings"

// standardQuotes rewrites the strings of QEMU's JSON dialect into standard
// JSON: QEMU's parser takes strings in single quotes ('driver': 'qcow2',
// as iotests write json: filenames) and the escape \' in either kind.
// Single-quoted strings become double-quoted ones, an inner " escaped;
// \' becomes '. Outside strings the text is kept; what is malformed stays
// malformed for the JSON decoder to refuse.
func standardQuotes(s string) string {
	if !strings.ContainsAny(s, `'\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '"' && c != '\'' {
			b.WriteByte(c)
			continue
		}
		quote := c
		b.WriteByte('"')
		for i++; i < len(s) && s[i] != quote; i++ {
			switch {
			case s[i] == '\\' && i+1 < len(s):
				i++
				if s[i] == '\'' {
					b.WriteByte('\'')
				} else {
					b.WriteByte('\\')
					b.WriteByte(s[i])
				}
			case s[i] == '"': // only inside single quotes
				b.WriteString(`\"`)
			default:
				b.WriteByte(s[i])
			}
		}
		if i < len(s) {
			b.WriteByte('"')
		}
	}
	return b.String()
}
