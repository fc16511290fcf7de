package cmdline

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ParseBlockdevArg parses the argument of -blockdev. Like QEMU it is
// JSON when its first byte is '{' (QEMU does not skip white space
// first), else keyval with the implied key "driver" ("-blockdev
// null-co,node-name=a" works in QEMU 7.2). JSON numbers stay
// json.Number so that large integers keep every digit.
func ParseBlockdevArg(s string) (map[string]any, error) {
	if !strings.HasPrefix(s, "{") {
		return ParseKeyval(s, "driver")
	}
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	v, err := jsonValue(d)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = errors.New("premature EOI")
		}
		return nil, fmt.Errorf("JSON parse error, %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("Expecting at most one JSON value")
	}
	return v.(map[string]any), nil
}

var errDuplicateKey = errors.New("duplicate key")

// jsonValue decodes one value token by token, because QEMU refuses
// duplicate object keys and encoding/json silently keeps the last.
func jsonValue(d *json.Decoder) (any, error) {
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
				return nil, errDuplicateKey
			}
			if m[k], err = jsonValue(d); err != nil {
				return nil, err
			}
		}
		_, err = d.Token()
		return m, err
	case json.Delim('['):
		l := []any{}
		for d.More() {
			v, err := jsonValue(d)
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
