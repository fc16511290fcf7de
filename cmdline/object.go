package cmdline

import (
	"errors"
	"fmt"

	"minivmm/block/objects"
)

// AddObjects creates every -object, in command-line order, as QEMU's
// object_option_parse and their creation do: an error in the option
// names it; one of the object's completion (its files) does not.
func AddObjects(r *objects.Registry, occ []Occurrence) error {
	for _, oc := range occ {
		if oc.Name != "object" {
			continue
		}
		m, err := ParseKeyval(oc.Value, "qom-type")
		if err != nil {
			return oc.Wrap(err)
		}
		err = r.Add(m, true)
		var dup *objects.DuplicateError
		var ce *objects.CompleteError
		var ue *objects.UnexpectedError
		switch {
		case errors.As(err, &ue):
			// qemu-system's words; qemu-img's and object-add's are the
			// registry's.
			return oc.Wrap(fmt.Errorf("Invalid parameter '%s'", ue.Name))
		case errors.As(err, &dup):
			return oc.Wrap(fmt.Errorf("Duplicate ID '%s' for object", dup.ID))
		case errors.As(err, &ce):
			return ce.Err
		case err != nil:
			return oc.Wrap(err)
		}
	}
	return nil
}
