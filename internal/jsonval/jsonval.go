// Package jsonval decodes JSON the way QEMU's parser accepts it for QMP
// and -blockdev: numbers kept exact (json.Number), duplicate keys refused,
// and errors worded as QEMU words them after "JSON parse error, ".
package jsonval

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
)

// Errors in QEMU's words.
var (
	ErrDuplicateKey   = errors.New("duplicate key")
	ErrExpectingValue = errors.New("expecting value")
	ErrMissingColon   = errors.New("missing : in object pair")
	ErrPrematureEOI   = errors.New("premature EOI")
	// ErrTrailing is QEMU's complaint about a second value after the first.
	ErrTrailing = errors.New("Expecting at most one JSON value")
)

// Decode parses data, which must hold exactly one JSON value. Objects come
// back as map[string]any, arrays as []any, numbers as json.Number.
func Decode(data []byte) (any, error) {
	data = standardQuotes(data)
	// The token path costs an allocation and a re-scan per token, which
	// showed in QMP-heavy loops; the fast path takes the common case and
	// leaves everything else, errors included, to the token path.
	if v, ok := decodeFast(data); ok {
		return v, nil
	}
	return decodeTokens(data)
}

// standardQuotes returns data with QEMU's single-quoted strings rewritten
// as standard JSON strings.
func standardQuotes(data []byte) []byte {
	if bytes.IndexByte(data, '\'') >= 0 {
		return doubleQuoted(data)
	}
	return data
}

// decodeTokens is the reference decoder: what it accepts and how it words
// errors is what minivmm has always done, and the fast path must agree
// with it.
func decodeTokens(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	v, err := value(d)
	if err != nil {
		return nil, qemuWords(err, data)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, ErrTrailing
	}
	return v, nil
}

// value decodes one value token by token, because QEMU refuses duplicate
// object keys and encoding/json silently keeps the last.
func value(d *json.Decoder) (any, error) {
	t, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch t {
	case json.Delim('{'):
		m := map[string]any{}
		for d.More() {
			t, err := d.Token()
			if err != nil {
				return nil, err
			}
			k, _ := t.(string) // the decoder allows only strings as keys
			if _, dup := m[k]; dup {
				return nil, ErrDuplicateKey
			}
			if m[k], err = value(d); err != nil {
				return nil, err
			}
		}
		_, err = d.Token()
		return m, err
	case json.Delim('['):
		l := []any{}
		for d.More() {
			v, err := value(d)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		_, err = d.Token()
		return l, err
	}
	return t, nil
}

// qemuWords turns encoding/json's complaints into QEMU's.
func qemuWords(err error, data []byte) error {
	if errors.Is(err, ErrDuplicateKey) {
		return err
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrPrematureEOI
	}
	msg := err.Error()
	trimmed := strings.TrimSpace(string(data))
	switch {
	case isWord(trimmed):
		return errors.New("invalid keyword '" + trimmed + "'")
	case strings.Contains(msg, "after object key"):
		return ErrMissingColon
	case strings.Contains(msg, "looking for beginning of value"),
		strings.Contains(msg, "looking for beginning of object key"):
		return ErrExpectingValue
	}
	return errors.New(strings.TrimPrefix(msg, "json: "))
}

// isWord reports whether s is a bare identifier, which QEMU's lexer reads
// as a keyword that is not true, false or null.
func isWord(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return !(s[0] >= '0' && s[0] <= '9' || s[0] == '-')
}

// doubleQuoted rewrites QEMU's single-quoted strings (in which a
// backslash escapes the quote) as standard JSON strings, so that what QEMU
// accepts, minivmm accepts. Anything malformed is left for the decoder to
// report.
func doubleQuoted(data []byte) []byte {
	out := make([]byte, 0, len(data)+8)
	for i := 0; i < len(data); i++ {
		c := data[i]
		if c != '"' && c != '\'' {
			out = append(out, c)
			continue
		}
		quote := c
		out = append(out, '"')
		for i++; i < len(data) && data[i] != quote; i++ {
			switch c := data[i]; {
			case c == '\\' && i+1 < len(data) && data[i+1] == '\'':
				out = append(out, '\'')
				i++
			case c == '\\' && i+1 < len(data):
				out = append(out, c, data[i+1])
				i++
			case c == '"':
				out = append(out, '\\', '"')
			default:
				out = append(out, c)
			}
		}
		if i < len(data) {
			out = append(out, '"')
		}
	}
	return out
}
