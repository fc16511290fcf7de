package iotool

import (
	"errors"
	"fmt"
	"strings"

	"minivmm/block"
	"minivmm/cmdline"
)

// parseOpenOptions reads an option string as qemu-io's open and reopen
// do: QemuOpts (qemu_opts_parse_noisily on a list that takes any key),
// whose keys are flat, turned into a QDict (qemu_opts_to_qdict). Unlike
// keyval, a key may be given both as a value and as the prefix of dotted
// keys ("overlap-check=constant,overlap-check.template=all"): the driver
// then sees both and judges them (qcow2 reports the conflict). So dotted
// keys nest as keyval nests them, except those that cannot: under a key
// that has a value of its own, or not valid keyval names; those stay flat,
// as QEMU passes them, for the driver's schema to take or refuse.
func parseOpenOptions(s string) (block.Options, error) {
	q, err := cmdline.ParseOpts(s, "")
	if err != nil || q.ID != "" {
		// qemu_opts_to_qdict puts the id in, which the empty list's
		// validation refuses (QEMU 7.2 says so for any id).
		return nil, errors.New("Invalid parameter 'id'")
	}
	keys := q.Keys()
	given := make(map[string]bool, len(keys))
	for _, k := range keys {
		given[k] = true
	}
	var nested []string
	flat := map[string]any{}
	for _, k := range keys {
		v, _ := q.Get(k)
		if underValue(k, given) || !keyvalName(k) {
			flat[k] = v
			continue
		}
		nested = append(nested, k+"="+strings.ReplaceAll(v, ",", ",,"))
	}
	m, err := cmdline.ParseKeyval(strings.Join(nested, ","), "")
	if err != nil {
		return nil, err
	}
	o := block.FromKeyval(m)
	for k, v := range block.FromKeyval(flat) {
		o[k] = v
	}
	return o, nil
}

// shortBooleans lists the elements of a QemuOpts string written without
// "=" ("lazy-refcounts", "noread-only"), which QEMU 7.2 takes as on/off
// with a deprecation warning ("help" and "?" excepted).
func shortBooleans(s string) []string {
	var flags []string
	for s != "" {
		n := strings.IndexAny(s, "=,")
		if n < 0 || s[n] == ',' {
			if n < 0 {
				n = len(s)
			}
			if k := s[:n]; k != "help" && k != "?" {
				flags = append(flags, k)
			}
			s = strings.TrimPrefix(s[n:], ",")
			continue
		}
		// A value: up to the next lone comma (",," is a comma).
		s = s[n+1:]
		for {
			i := strings.IndexByte(s, ',')
			if i < 0 {
				s = ""
				break
			}
			if i+1 < len(s) && s[i+1] == ',' {
				s = s[i+2:]
				continue
			}
			s = s[i+1:]
			break
		}
	}
	return flags
}

// shortBooleanWarning is QEMU's warning for a short-form boolean.
func shortBooleanWarning(flag string) string {
	if k, ok := strings.CutPrefix(flag, "no"); ok {
		return fmt.Sprintf("warning: short-form boolean option '%s' deprecated\nPlease use %s=off instead", flag, k)
	}
	return fmt.Sprintf("warning: short-form boolean option '%s' deprecated\nPlease use %s=on instead", flag, flag)
}

// underValue reports whether some dotted prefix of k is itself a key.
func underValue(k string, given map[string]bool) bool {
	for i := strings.LastIndexByte(k, '.'); i > 0; i = strings.LastIndexByte(k[:i], '.') {
		if given[k[:i]] {
			return true
		}
	}
	return false
}

// keyvalName reports whether keyval takes k as a key.
func keyvalName(k string) bool {
	_, err := cmdline.ParseKeyval(k+"=x", "")
	return err == nil
}
