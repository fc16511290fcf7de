package file

import (
	"errors"
	"fmt"

	"minivmm/block"
)

// checkAIO takes the aio option as a QEMU built without linux-aio and
// io_uring does: threads is what runs (the goroutine pool of package
// block/aio, over this driver's preadv/pwritev); native is refused with
// QEMU's words (first the cache.direct rule every QEMU build applies),
// and io_uring is not a value the option has in such a build.
func checkAIO(o block.Options, direct bool) error {
	aio, err := o.String("aio", "threads")
	if err != nil {
		return err
	}
	switch aio {
	case "threads":
		return nil
	case "native":
		if !direct {
			return errors.New("aio=native was specified, but it requires cache.direct=on, which was not specified.")
		}
		return errors.New("aio=native was specified, but is not supported in this build.")
	}
	return fmt.Errorf("Parameter 'aio' does not accept value '%s'", aio)
}
