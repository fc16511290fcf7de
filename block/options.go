package block

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// Options are one node's BlockdevOptions as a user gave them: JSON values
// (QMP, -blockdev '{...}': json.Number for numbers) or keyval strings
// (-blockdev a=b,c.d=e), nested maps for children given inline.
type Options map[string]any

// OptType is the QAPI type of an option.
type OptType int

const (
	OptString OptType = iota
	OptBool
	OptInt
	OptSize  // a non-negative integer; keyval takes k/M/G suffixes
	OptChild // a node-name reference, or nested options for a new node
	OptObject
	// OptOverlapChecks is QAPI's alternate Qcow2OverlapChecks: a string,
	// or an object (qcow2's overlap-check).
	OptOverlapChecks
)

var optTypeNames = [...]string{OptString: "string", OptBool: "boolean", OptInt: "integer", OptSize: "integer", OptChild: "BlockdevRef", OptObject: "object", OptOverlapChecks: "Qcow2OverlapChecks"}

// genericOptions are what every node takes, whatever its driver.
var genericOptions = map[string]OptType{
	"driver": OptString, "node-name": OptString, "read-only": OptBool, "auto-read-only": OptBool,
	"cache": OptObject, "discard": OptString, "detect-zeroes": OptString, "force-share": OptBool,
}

var cacheOptions = map[string]OptType{"direct": OptBool, "no-flush": OptBool}

// optionError is a QAPI-style complaint about an option.
func optionError(format string, a ...any) error { return fmt.Errorf(format, a...) }

// checkKeys refuses keys outside schema and values of the wrong type, in
// sorted key order so that the message is stable. prefix names nested
// options ("cache.").
func checkKeys(o Options, schema map[string]OptType, prefix string) error {
	if err := checkTypes(o, schema, prefix); err != nil {
		return err
	}
	return checkUnexpected(o, schema, prefix)
}

// checkTypes checks the values of the keys schema knows.
func checkTypes(o Options, schema map[string]OptType, prefix string) error {
	for _, k := range slices.Sorted(maps.Keys(o)) {
		if t, ok := schema[k]; ok {
			if _, err := convert(o[k], t, prefix+k); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkUnexpected refuses keys schema does not know; QAPI looks for them
// last, after the members it knows.
func checkUnexpected(o Options, schema map[string]OptType, prefix string) error {
	for _, k := range slices.Sorted(maps.Keys(o)) {
		if _, ok := schema[k]; !ok {
			return optionError("Parameter '%s%s' is unexpected", prefix, k)
		}
	}
	return nil
}

// convert checks v against t and returns it as string, bool, int64,
// Options (nested) or a string reference (OptChild).
func convert(v any, t OptType, name string) (any, error) {
	bad := func() error {
		return optionError("Invalid parameter type for '%s', expected: %s", name, optTypeNames[t])
	}
	switch t {
	case OptString:
		switch v := v.(type) {
		case string:
			return v, nil
		case keyvalString:
			return string(v), nil
		}
	case OptBool:
		switch v := v.(type) {
		case bool:
			return v, nil
		case keyvalString:
			switch v {
			case "on", "yes", "true", "y":
				return true, nil
			case "off", "no", "false", "n":
				return false, nil
			}
			return nil, optionError("Parameter '%s' expects 'on' or 'off'", name)
		}
	case OptInt, OptSize:
		var n int64
		var err error
		switch v := v.(type) {
		case json.Number:
			n, err = strconv.ParseInt(string(v), 10, 64)
		case keyvalString:
			n, err = parseKeyvalNumber(string(v), t == OptSize)
			if t == OptSize && err == nil && n < 0 {
				err = strconv.ErrRange
			}
			if err != nil {
				return nil, optionError("Parameter '%s' expects %s", name, map[bool]string{true: "a size value", false: "an integer"}[t == OptSize])
			}
		case int:
			n = int64(v)
		case int64:
			n = v
		default:
			return nil, bad()
		}
		if err != nil {
			return nil, bad()
		}
		if t == OptSize && n < 0 {
			return nil, optionError("Parameter '%s' expects a non-negative number below 2^64", name)
		}
		return n, nil
	case OptChild:
		switch v := v.(type) {
		case nil: // "backing": null; no other child may be null
			if strings.HasSuffix(name, "backing") {
				return nil, nil
			}
			// QEMU finds this after QAPI, naming the child alone.
			name = name[strings.LastIndex(name, ".")+1:]
		case string:
			return v, nil
		case keyvalString:
			return string(v), nil
		case map[string]any:
			return Options(v), nil
		case Options:
			return v, nil
		}
	case OptObject:
		switch v := v.(type) {
		case map[string]any:
			return Options(v), nil
		case Options:
			return v, nil
		case []any: // a list of objects (blkdebug's inject-error)
			return v, nil
		}
	case OptOverlapChecks:
		switch v := v.(type) {
		case string:
			return v, nil
		case keyvalString:
			return string(v), nil
		case map[string]any:
			return Options(v), nil
		case Options:
			return v, nil
		}
	}
	return nil, bad()
}

// keyvalString marks a value that came from keyval syntax, where every
// scalar is a string to be read as the schema says.
type keyvalString string

// FromKeyval turns the result of cmdline.ParseKeyval (strings and nested
// maps) into Options whose scalars are read as the schema says.
func FromKeyval(m map[string]any) Options {
	o := Options{}
	for k, v := range m {
		switch v := v.(type) {
		case string:
			o[k] = keyvalString(v)
		case map[string]any:
			o[k] = FromKeyval(v)
		case []any: // keyval's lists (quorum's children.0, children.1)
			o[k] = fromKeyvalList(v)
		default:
			o[k] = v
		}
	}
	return o
}

func fromKeyvalList(l []any) []any {
	out := make([]any, len(l))
	for i, v := range l {
		switch v := v.(type) {
		case string:
			out[i] = keyvalString(v)
		case map[string]any:
			out[i] = FromKeyval(v)
		case []any:
			out[i] = fromKeyvalList(v)
		default:
			out[i] = v
		}
	}
	return out
}

func parseKeyvalNumber(s string, size bool) (int64, error) {
	mult := int64(1)
	if size && s != "" {
		switch strings.ToUpper(s[len(s)-1:]) {
		case "K":
			mult = 1 << 10
		case "M":
			mult = 1 << 20
		case "G":
			mult = 1 << 30
		case "T":
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:len(s)-1]
		}
	}
	if i := strings.IndexByte(s, '.'); size && i >= 0 {
		return parseSizeFraction(s[:i], s[i:], mult)
	}
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil || n > (1<<63-1)/mult {
		return 0, fmt.Errorf("bad number %q", s)
	}
	return n * mult, nil
}

// parseSizeFraction is a size with a decimal fraction ("1.25M"), as
// QEMU's qemu_strtosz takes it: decimal, a fraction only with a suffix,
// no exponent, the product rounded half up.
func parseSizeFraction(whole, frac string, mult int64) (int64, error) {
	bad := fmt.Errorf("bad number %q", whole+frac)
	n, err := strconv.ParseUint(whole, 10, 63)
	if err != nil || strings.ContainsAny(frac, "eExXpP+-_") {
		return 0, bad
	}
	f, err := strconv.ParseFloat("0"+frac, 64)
	if err != nil {
		return 0, bad
	}
	if mult == 1 {
		if f != 0 {
			return 0, bad
		}
		return int64(n), nil
	}
	// 64-bit fixed point: the fraction's part of the product.
	hi, lo := bits.Mul64(uint64(f*0x1p64), uint64(mult))
	part := hi + lo>>63
	if n > (1<<63-1-part)/uint64(mult) {
		return 0, bad
	}
	return int64(n*uint64(mult) + part), nil
}

// get returns option key converted to t, or (nil, nil) when absent.
func (o Options) get(key string, t OptType) (any, error) {
	v, ok := o[key]
	if !ok {
		return nil, nil
	}
	return convert(v, t, key)
}

// String returns a string option, or def when absent.
func (o Options) String(key, def string) (string, error) {
	v, err := o.get(key, OptString)
	if v == nil || err != nil {
		return def, err
	}
	return v.(string), nil
}

// Bool returns a boolean option, or def when absent.
func (o Options) Bool(key string, def bool) (bool, error) {
	v, err := o.get(key, OptBool)
	if v == nil || err != nil {
		return def, err
	}
	return v.(bool), nil
}

// Int returns an integer option, or def when absent.
func (o Options) Int(key string, def int64) (int64, error) {
	v, err := o.get(key, OptInt)
	if v == nil || err != nil {
		return def, err
	}
	return v.(int64), nil
}

// Size returns a non-negative size option, or def when absent.
func (o Options) Size(key string, def int64) (int64, error) {
	v, err := o.get(key, OptSize)
	if v == nil || err != nil {
		return def, err
	}
	return v.(int64), nil
}

// Object returns a nested options object, or nil when absent.
func (o Options) Object(key string) (Options, error) {
	v, err := o.get(key, OptObject)
	if v == nil || err != nil {
		return nil, err
	}
	return v.(Options), nil
}

// Clone copies o deeply enough that changing the copy's nested objects
// leaves o alone.
func (o Options) Clone() Options {
	c := make(Options, len(o))
	for k, v := range o {
		switch v := v.(type) {
		case Options:
			c[k] = v.Clone()
		case map[string]any:
			c[k] = Options(v).Clone()
		default:
			c[k] = v
		}
	}
	return c
}
