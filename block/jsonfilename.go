package block

// json: filenames: a whole tree of node options in a filename, as QEMU's
// bdrv_parse_json reads them. Here, not in the tools, because an image
// header may name its backing file so (qcow2's backing of a json: name).

import (
	"errors"
	"fmt"
	"strings"

	"minivmm/internal/jsonval"
)

// ErrJSONFilename is a json: filename that is not a JSON object.
var ErrJSONFilename = errors.New("Could not parse the JSON options")

// ParseJSONFilename reads the object of a json: filename (QEMU's dialect,
// single-quoted strings too, as internal/jsonval reads it): numbers stay
// json.Number (as QMP's), nested objects and dotted keys become nested
// Options.
func ParseJSONFilename(s string) (Options, error) {
	// QEMU's JSON parser, which bdrv_parse_json uses, takes single-quoted
	// strings too: scripts write json:{'driver': 'qcow2', ...}.
	v, err := jsonval.Decode([]byte(s))
	m, ok := v.(map[string]any)
	if err != nil || !ok {
		return nil, ErrJSONFilename
	}
	out := Options{}
	if err := mergeJSON(out, m); err != nil {
		return nil, err
	}
	return out, nil
}

func mergeJSON(dst Options, m map[string]any) error {
	for k, v := range m {
		path := strings.Split(k, ".")
		d := dst
		for _, p := range path[:len(path)-1] {
			sub, ok := d[p].(Options)
			if !ok {
				if _, taken := d[p]; taken {
					return fmt.Errorf("Cannot mix dotted and nested keys for '%s'", k)
				}
				sub = Options{}
				d[p] = sub
			}
			d = sub
		}
		leaf := path[len(path)-1]
		if obj, ok := v.(map[string]any); ok {
			sub, ok := d[leaf].(Options)
			if !ok {
				if _, taken := d[leaf]; taken {
					return fmt.Errorf("Cannot mix dotted and nested keys for '%s'", k)
				}
				sub = Options{}
				d[leaf] = sub
			}
			if err := mergeJSON(sub, obj); err != nil {
				return err
			}
			continue
		}
		if _, taken := d[leaf]; taken {
			return fmt.Errorf("Cannot mix dotted and nested keys for '%s'", k)
		}
		d[leaf] = v
	}
	return nil
}
