package objects

import (
	"fmt"
	"maps"
	"slices"
)

// props_ reads an object's properties as QEMU's visitors do: from keyval
// every value is a string and a bool is spelled on/off; from JSON a
// value must have its type.
type props_ struct {
	m      map[string]any
	keyval bool
	seen   []string
}

func sortedKeys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

// str returns a string property, "" when absent.
func (p *props_) str(k string) (string, error) {
	v, ok := p.m[k]
	if !ok {
		return "", nil
	}
	s, isStr := v.(string)
	if !isStr {
		if p.keyval {
			return "", fmt.Errorf("Parameter '%s' expects a string", k)
		}
		return "", fmt.Errorf("Invalid parameter type for '%s', expected: string", k)
	}
	return s, nil
}

// boolean returns a bool property, def when absent.
func (p *props_) boolean(k string, def bool) (bool, error) {
	v, ok := p.m[k]
	if !ok {
		return def, nil
	}
	if p.keyval {
		switch v {
		case "on", "yes", "true", "y":
			return true, nil
		case "off", "no", "false", "n":
			return false, nil
		}
		return false, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", k)
	}
	b, isBool := v.(bool)
	if !isBool {
		return false, fmt.Errorf("Invalid parameter type for '%s', expected: boolean", k)
	}
	return b, nil
}

// enum returns a property that takes one of values, def when absent.
func (p *props_) enum(k, def string, values ...string) (string, error) {
	s, err := p.str(k)
	if err != nil {
		return "", err
	}
	if _, ok := p.m[k]; !ok {
		return def, nil
	}
	if !slices.Contains(values, s) {
		return "", fmt.Errorf("Parameter '%s' does not accept value '%s'", k, s)
	}
	return s, nil
}

// readOnly refuses a property QEMU lists but does not let anyone set
// (a TLS object's and a secret's "loaded").
func (p *props_) readOnly(typ, k string) error {
	if _, ok := p.m[k]; ok {
		return &CompleteError{fmt.Errorf("Property '%s.%s' is not writable", typ, k)}
	}
	return nil
}
