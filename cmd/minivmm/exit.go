package main

import (
	"minivmm/block"
	"minivmm/internal/qtool"
)

// closeGraph closes every image at exit and returns the exit status it
// calls for. QEMU's exit says nothing of an image whose write-back failed
// (a lazy_refcounts image on a full or failing disk, left dirty): minivmm
// prints each failure as error_report would and exits 1, so that the
// manager hears of it.
func closeGraph(g *block.Graph, rep *reporter) int {
	msgs := qtool.CloseMessages(g.Close())
	for _, m := range msgs {
		rep.Printf("%s", m)
	}
	if len(msgs) > 0 {
		return 1
	}
	return 0
}
