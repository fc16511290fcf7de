package cmdline

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

// ParseKeyval parses QEMU's keyval syntax, the one -blockdev uses:
// "key=value,..." where dotted keys ("file.filename=x") build nested
// maps and numeric fragments ("children.0=a,children.1=b") build lists.
// ",," stands for a comma in a value. When impliedKey is not empty, a
// first element without "=" is its value (without ",," escaping).
//
// Values stay strings: keyval has no types, and QEMU converts them only
// when it visits the options with their schema, which is the block
// layer's job here. A key given twice keeps its last value, as in QEMU.
func ParseKeyval(s, impliedKey string) (map[string]any, error) {
	root := map[string]any{}
	help := false
	for first := true; s != ""; first = false {
		n := strings.IndexAny(s, "=,")
		if n < 0 {
			n = len(s)
		}
		key, rest := s[:n], s[n:]
		if n > 0 && !strings.HasPrefix(rest, "=") {
			if key == "help" || key == "?" {
				help, s = true, strings.TrimPrefix(rest, ",")
				continue
			}
			if first && impliedKey != "" {
				if err := put(root, strings.Split(impliedKey, "."), key); err != nil {
					return nil, err
				}
				s = strings.TrimPrefix(rest, ",")
				continue
			}
		}
		frags, err := splitKey(key)
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(rest, "=") {
			return nil, fmt.Errorf("Expected '=' after parameter '%s'", key)
		}
		var val string
		val, s = optValue(rest[1:])
		if err := put(root, frags, val); err != nil {
			return nil, err
		}
	}
	if help {
		// QEMU reports it only once the whole string has parsed.
		return nil, errors.New("Help is not available for this option")
	}
	v, err := listify(root, "")
	if err != nil {
		return nil, err
	}
	return v.(map[string]any), nil
}

// splitKey checks a dotted key as QEMU does: the first fragment is a
// QAPI name, later ones a QAPI name or a list index, each under 128
// bytes. A downstream name ("__com.redhat_x") keeps its dots.
func splitKey(key string) ([]string, error) {
	var frags []string
	s := key
	for {
		n := qapiNameLen(s)
		if frags != nil && s != "" && s[0] >= '0' && s[0] <= '9' {
			n = len(s) - len(strings.TrimLeft(s, "0123456789"))
		}
		if n == 0 || n < len(s) && s[n] != '.' {
			return nil, fmt.Errorf("%w '%s'", ErrInvalidParameter, key)
		}
		if n >= 128 {
			if frags != nil || n < len(s) {
				return nil, fmt.Errorf("Parameter fragment '%s' is too long", s[:n])
			}
			return nil, fmt.Errorf("Parameter '%s' is too long", s[:n])
		}
		frags = append(frags, s[:n])
		if n == len(s) {
			return frags, nil
		}
		s = s[n+1:]
	}
}

// qapiNameLen is the length of the QAPI name at the start of s: a letter
// then letters, digits, '-' and '_', optionally after a downstream
// prefix "__RFQDN_". It is 0 when s does not start with one.
func qapiNameLen(s string) int {
	alnum := func(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' || c >= '0' && c <= '9' }
	i := 0
	if strings.HasPrefix(s, "__") {
		for i = 2; i < len(s) && (alnum(s[i]) || s[i] == '-' || s[i] == '.'); i++ {
		}
		if i == len(s) || s[i] != '_' {
			return 0
		}
		i++
	}
	if i == len(s) || s[i]|0x20 < 'a' || s[i]|0x20 > 'z' {
		return 0
	}
	for i++; i < len(s) && (alnum(s[i]) || s[i] == '-' || s[i] == '_'); i++ {
	}
	return i
}

// put stores val at the path frags, creating maps on the way and
// refusing a path that needs a node to be both a string and a map.
func put(root map[string]any, frags []string, val string) error {
	cur := root
	for i, f := range frags {
		f = indexKey(f)
		if i == len(frags)-1 {
			if _, isMap := cur[f].(map[string]any); isMap {
				return inconsistent(frags[:i+1])
			}
			cur[f] = val
			return nil
		}
		switch next := cur[f].(type) {
		case nil:
			m := map[string]any{}
			cur[f], cur = m, m
		case map[string]any:
			cur = next
		default:
			return inconsistent(frags[:i+1])
		}
	}
	return nil
}

func inconsistent(frags []string) error {
	return fmt.Errorf("Parameters '%s.*' used inconsistently", strings.Join(frags, "."))
}

// indexKey makes "007" and "7" the same list element; QEMU caps
// indexes at INT_MAX, which then shows up as a missing element.
func indexKey(f string) string {
	if f == "" || f[0] < '0' || f[0] > '9' {
		return f
	}
	n, err := strconv.ParseUint(f, 10, 31)
	if err != nil {
		n = math.MaxInt32
	}
	return strconv.FormatUint(n, 10)
}

// listify turns maps whose keys are all list indexes into lists, inner
// maps first. Keys are visited sorted so that errors do not depend on
// map order.
func listify(m map[string]any, prefix string) (any, error) {
	indexes := 0
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if sub, ok := m[k].(map[string]any); ok {
			v, err := listify(sub, prefix+k+".")
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
		if k[0] >= '0' && k[0] <= '9' {
			indexes++
		}
	}
	switch indexes {
	case 0:
		return m, nil
	case len(m):
	default:
		return nil, fmt.Errorf("Parameters '%s*' used inconsistently", prefix)
	}
	list := make([]any, len(m))
	for i := range list {
		v, ok := m[strconv.Itoa(i)]
		if !ok {
			return nil, fmt.Errorf("Parameter '%s%d' missing", prefix, i)
		}
		list[i] = v
	}
	return list, nil
}
