// Package nbd is the NBD server of minivmm's block exports: the
// protocol as doc/proto.md of the NBD project defines it and QEMU 7.2's
// server speaks it (fixed newstyle handshake, structured replies, meta
// contexts base:allocation and qemu:allocation-depth).
package nbd

import "time"

// Limits of this server.
const (
	// maxOption is the longest option data read; longer is drained and
	// refused (no option minivmm knows needs more), so that a client
	// cannot make the server hold QEMU's 32 MiB per connection.
	maxOption = 64 << 10
	// maxExtents bounds one block status reply.
	maxExtents = 1 << 14
	// maxInFlight bounds the requests one connection has in flight; the
	// reader stops reading until one completes.
	maxInFlight = 128
	// inlineMax is the largest read or write the reader may serve
	// itself; when inlineSlowOf8 of the last 8 took longer than
	// inlineSlow, the next inlineBackoff go to workers (inlineGate).
	inlineMax     = 64 << 10
	inlineSlow    = 200 * time.Microsecond
	inlineSlowOf8 = 3
	inlineBackoff = 1024
	// sendBuffer is the SO_SNDBUF asked for on each connection.
	sendBuffer = 2 << 20
)

// Meta context ids, fixed per context as QEMU numbers them: an export's
// dirty bitmaps follow, the i-th (of its bitmaps=) as metaDirtyBitmap+i.
const (
	metaBaseAllocation  = 0
	metaAllocationDepth = 1
	metaDirtyBitmap     = 2
)
