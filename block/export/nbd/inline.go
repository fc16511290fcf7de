package nbd

import "math/bits"

// inlineGate decides whether the reader may serve the next small
// request itself (serve1): not for inlineBackoff requests after
// inlineSlowOf8 of the last 8 it served were slow. One slow request is
// no sign: on a loaded machine the reader is preempted in the middle of
// page-cache hits now and then, and backing off on each sent most
// requests of a run to workers. Reads that wait for the disk are slow
// one after another.
type inlineGate struct {
	off int   // requests to go to workers before trying inline again
	log uint8 // the last 8 inline requests, a bit set for each slow one
}

// open tells whether the next request may be served inline, counting it
// against the back-off when not; only the reader calls it.
func (g *inlineGate) open() bool {
	if g.off > 0 {
		g.off--
		return false
	}
	return true
}

// served records how an inline request went.
func (g *inlineGate) served(slow bool) {
	g.log <<= 1
	if !slow {
		return
	}
	g.log |= 1
	if bits.OnesCount8(g.log) >= inlineSlowOf8 {
		g.off, g.log = inlineBackoff, 0
	}
}
