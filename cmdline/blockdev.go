package cmdline

import (
	"errors"
	"fmt"
	"strings"

	"minivmm/internal/jsonval"
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
	v, err := jsonval.Decode([]byte(s))
	if errors.Is(err, jsonval.ErrTrailing) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("JSON parse error, %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("JSON parse error, expecting an object")
	}
	return m, nil
}
