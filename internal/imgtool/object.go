package imgtool

// --object, as qemu-img takes it: the user-creatable objects a script
// passes. TLS credentials are what the nbd driver's tls-creds names; a
// secret is checked as QEMU checks it and kept by id (minivmm has no
// encryption to use it); other types are refused with QEMU's words for
// an unknown one, or the registry's for a TLS type minivmm cannot build.

import (
	"fmt"

	"minivmm/block/objects"
	"minivmm/cmdline"
)

// object reads one --object, printing QEMU's error when it is refused.
func (e *env) object(arg string) bool {
	m, err := cmdline.ParseKeyval(arg, "qom-type")
	if err == nil {
		if e.objects == nil {
			e.objects = objects.NewRegistry()
		}
		err = e.objects.Add(m, true)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "%s: %v\n", e.prog, err)
		return false
	}
	return true
}
