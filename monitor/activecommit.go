package monitor

import (
	"minivmm/block"
)

// startActiveCommit runs block-commit whose top is the active layer
// (bs): QEMU's commit_active_start, a mirror of bs into base that ends,
// on block-job-complete, with bs's users moved onto base. a are the
// command's checked arguments, devName the backend name a job id
// defaults to.
//
// Not yet here: the mirror job provides it.
func startActiveCommit(c *call, a Args, devName string, bs, base *block.Node) (any, error) {
	return nil, genericError("Active commit is not supported yet")
}
