// Package drivers registers every block driver minivmm has; import it
// for its side effect, as database/sql users import their driver.
package drivers

import (
	_ "minivmm/block/blkdebug"
	_ "minivmm/block/compressfilter"
	_ "minivmm/block/file"
	_ "minivmm/block/filter"
	_ "minivmm/block/nbdclient"
	_ "minivmm/block/nullco"
	_ "minivmm/block/qcow2"
	_ "minivmm/block/quorum"
	_ "minivmm/block/raw"
)
