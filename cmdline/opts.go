package cmdline

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrInvalidParameter is what QEMU calls a key the option does not know.
var ErrInvalidParameter = errors.New("Invalid parameter")

// Opt is one key=value element of a QemuOpts string.
type Opt struct{ Key, Value string }

// Opts is a parsed QemuOpts string such as "socket,id=mon0,path=/x".
type Opts struct {
	// ID is the first id= element; QEMU takes it out of the list and
	// ignores later ones. Empty when absent (an empty id is refused).
	ID string
	// Elems are the other elements in command-line order, repeats kept.
	Elems []Opt
}

// Kind is the type QEMU declares for a QemuOpts parameter.
type Kind int

// The QemuOpts parameter types.
const (
	OptString Kind = iota
	OptBool
	OptNumber
	OptSize
)

// ParseOpts parses a QemuOpts string. ",," stands for a comma inside a
// value. An element without "=" in first position is the value of
// impliedKey when impliedKey is not empty; any other element without
// "=" is a legacy short-form boolean ("server" is server=on, "nowait" is
// wait=off), which QEMU 7.2 still accepts with a deprecation warning.
// The only error is a malformed id, which QEMU checks first.
func ParseOpts(s, impliedKey string) (*Opts, error) {
	o := &Opts{}
	idSeen := false
	for first := true; s != ""; first = false {
		var e Opt
		n := strings.IndexAny(s, "=,")
		if n < 0 {
			n = len(s)
		}
		switch {
		case n < len(s) && s[n] == '=':
			e.Key = s[:n]
			e.Value, s = optValue(s[n+1:])
		case first && impliedKey != "":
			e.Key = impliedKey
			e.Value, s = optValue(s)
		default:
			e.Key, e.Value, s = s[:n], "on", strings.TrimPrefix(s[n:], ",")
			if k, ok := strings.CutPrefix(e.Key, "no"); ok {
				e.Key, e.Value = k, "off"
			}
		}
		if e.Key != "id" {
			o.Elems = append(o.Elems, e)
		} else if !idSeen {
			idSeen, o.ID = true, e.Value
		}
	}
	if idSeen && !wellFormedID(o.ID) {
		return nil, paramError("id", o.ID, errors.New("expects an identifier"))
	}
	return o, nil
}

// optValue reads a value up to the next lone comma, turning ",," into
// ","; rest starts after that comma.
func optValue(s string) (value, rest string) {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, ',')
		if i < 0 {
			b.WriteString(s)
			return b.String(), ""
		}
		b.WriteString(s[:i])
		if i+1 == len(s) || s[i+1] != ',' {
			return b.String(), s[i+1:]
		}
		b.WriteByte(',')
		s = s[i+2:]
	}
}

// wellFormedID is QEMU's id_wellformed: a letter, then letters, digits,
// '-', '.' or '_'.
func wellFormedID(id string) bool {
	for i, c := range []byte(id) {
		letter := c|0x20 >= 'a' && c|0x20 <= 'z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_')) {
			return false
		}
	}
	return id != ""
}

// Get returns the value of key; the last occurrence wins, as in QEMU.
func (o *Opts) Get(key string) (string, bool) {
	if key == "id" {
		return o.ID, o.ID != ""
	}
	for i := len(o.Elems) - 1; i >= 0; i-- {
		if o.Elems[i].Key == key {
			return o.Elems[i].Value, true
		}
	}
	return "", false
}

// Keys lists the distinct keys other than id, in order of first use.
func (o *Opts) Keys() []string {
	var keys []string
	for _, e := range o.Elems {
		if !slices.Contains(keys, e.Key) {
			keys = append(keys, e.Key)
		}
	}
	return keys
}

// Validate checks every element against the parameters the option
// declares, in command-line order like QEMU does while parsing, so the
// first bad element is reported, even one a later repeat overrides.
// An id is refused unless kinds has "id".
func (o *Opts) Validate(kinds map[string]Kind) error {
	if _, ok := kinds["id"]; o.ID != "" && !ok {
		return fmt.Errorf("%w 'id'", ErrInvalidParameter)
	}
	for _, e := range o.Elems {
		k, ok := kinds[e.Key]
		if !ok {
			return fmt.Errorf("%w '%s'", ErrInvalidParameter, e.Key)
		}
		var err error
		switch k {
		case OptBool:
			_, err = ParseBool(e.Value)
		case OptNumber:
			_, err = ParseUint(e.Value)
		case OptSize:
			_, err = ParseSize(e.Value)
		}
		if err != nil {
			return paramError(e.Key, e.Value, err)
		}
	}
	return nil
}

// Bool returns key's value as a boolean, def when key is absent.
func (o *Opts) Bool(key string, def bool) (bool, error) { return get(o, key, def, ParseBool) }

// Uint returns key's value as a QemuOpts number, def when key is absent.
func (o *Opts) Uint(key string, def uint64) (uint64, error) { return get(o, key, def, ParseUint) }

// Int is Uint read as two's complement, as QEMU's callers cast it, so
// "-1" is -1 and a value of 2^63 or more is negative.
func (o *Opts) Int(key string, def int64) (int64, error) {
	n, err := o.Uint(key, uint64(def))
	return int64(n), err
}

// Size returns key's value as a byte count, def when key is absent.
func (o *Opts) Size(key string, def uint64) (uint64, error) { return get(o, key, def, ParseSize) }

func get[T any](o *Opts, key string, def T, parse func(string) (T, error)) (T, error) {
	v, ok := o.Get(key)
	if !ok {
		return def, nil
	}
	t, err := parse(v)
	if err != nil {
		return t, paramError(key, v, err)
	}
	return t, nil
}

// String renders o as key=value elements with commas doubled, so that
// ParseOpts(o.String(), "") gives o back.
func (o *Opts) String() string {
	var parts []string
	if o.ID != "" {
		parts = append(parts, "id="+o.ID) // well-formed ids have no commas
	}
	for _, e := range o.Elems {
		parts = append(parts, e.Key+"="+strings.ReplaceAll(e.Value, ",", ",,"))
	}
	return strings.Join(parts, ",")
}
