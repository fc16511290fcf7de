// Package nbd is the NBD server of minivmm's block exports: the
// protocol as doc/proto.md of the NBD project defines it and QEMU 7.2's
// server speaks it (fixed newstyle handshake, structured replies, meta
// contexts base:allocation and qemu:allocation-depth).
package nbd

// Handshake.
const (
	magicNBD      = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt      = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply = 0x0003e889045565a9

	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10

	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4

	repErr             = 1 << 31
	repErrUnsup        = repErr | 1
	repErrPolicy       = repErr | 2
	repErrInvalid      = repErr | 3
	repErrUnknown      = repErr | 6
	repErrBlockSizeReq = repErr | 8
	repErrTooBig       = repErr | 9

	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Transmission flags.
const (
	tfHasFlags       = 1 << 0
	tfReadOnly       = 1 << 1
	tfSendFlush      = 1 << 2
	tfSendFUA        = 1 << 3
	tfSendTrim       = 1 << 5
	tfSendWriteZeros = 1 << 6
	tfSendDF         = 1 << 7
	tfCanMultiConn   = 1 << 8
	tfSendCache      = 1 << 10
	tfSendFastZero   = 1 << 11
)

// Transmission.
const (
	magicRequest      = 0x25609513
	magicSimpleReply  = 0x67446698
	magicStructReply  = 0x668e33ef
	requestHeaderSize = 28

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7

	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4

	replyFlagDone = 1 << 0

	chunkNone        = 0
	chunkOffsetData  = 1
	chunkOffsetHole  = 2
	chunkBlockStatus = 5
	chunkError       = 1<<15 | 1

	stateHole = 1 << 0
	stateZero = 1 << 1
)

// NBD errors (the protocol's own numbers, Linux's where they overlap).
const (
	errPerm     = 1
	errIO       = 5
	errNoMem    = 12
	errInval    = 22
	errNoSpc    = 28
	errOverflow = 75
	errNotSup   = 95
	errShutdown = 108
)

// Limits, QEMU's: the largest payload (NBD_MAX_BUFFER_SIZE), the longest
// name or description (NBD_MAX_STRING_SIZE).
const (
	maxPayload = 32 << 20
	maxString  = 4096
	// maxOption is the longest option data read; longer is drained and
	// refused (no option minivmm knows needs more), so that a client
	// cannot make the server hold QEMU's 32 MiB per connection.
	maxOption = 64 << 10
	// maxExtents bounds one block status reply.
	maxExtents = 1 << 14
	// maxInFlight bounds the requests one connection has in flight; the
	// reader stops reading until one completes.
	maxInFlight = 128
)

// Meta context ids, fixed per context as QEMU numbers them.
const (
	metaBaseAllocation  = 0
	metaAllocationDepth = 1
	ctxBaseAllocation   = "base:allocation"
	ctxAllocationDepth  = "qemu:allocation-depth"
)
