package iotool

import (
	"errors"
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
