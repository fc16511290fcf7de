package imgtool

// --object, as qemu-img takes it: the user-creatable objects a qcow2 or
// raw script passes. minivmm has no encryption, so a secret is checked
// as QEMU checks it and kept by id only (a duplicate id is refused);
// other types are refused with QEMU's words for an unknown one.

import (
	"fmt"
	"os"
	"slices"

	"minivmm/cmdline"
)

// object reads one --object, printing QEMU's error when it is refused.
func (e *env) object(arg string) bool {
	fail := func(format string, a ...any) bool {
		fmt.Fprintf(e.stderr, "%s: "+format+"\n", append([]any{e.prog}, a...)...)
		return false
	}
	m, err := cmdline.ParseKeyval(arg, "qom-type")
	if err != nil {
		return fail("%v", err)
	}
	typ, _ := m["qom-type"].(string)
	if typ != "secret" {
		return fail("Parameter 'qom-type' does not accept value '%s'", typ)
	}
	id, ok := m["id"].(string)
	if !ok {
		return fail("Parameter 'id' is missing")
	}
	for k, v := range m {
		if _, str := v.(string); !str || !slices.Contains([]string{"qom-type", "id", "data", "file", "format", "keyid", "iv", "loaded"}, k) {
			return fail("Parameter '%s' is unexpected", k)
		}
	}
	data, hasData := m["data"].(string)
	file, hasFile := m["file"].(string)
	switch {
	case hasData && hasFile:
		return fail("'data' and 'file' are mutually exclusive")
	case !hasData && !hasFile:
		return fail("Either 'file' or 'data' must be provided")
	case hasFile:
		b, err := os.ReadFile(file)
		if err != nil {
			return fail("Unable to read %s: %v", file, err)
		}
		data = string(b)
	}
	_ = data
	if e.objects[id] {
		return fail("attempt to add duplicate property '%s' to object (type 'container')", id)
	}
	if e.objects == nil {
		e.objects = map[string]bool{}
	}
	e.objects[id] = true
	return true
}
