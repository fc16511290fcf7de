// Package nbdproto holds the NBD protocol's numbers (doc/proto.md of the
// NBD project), shared by minivmm's server (block/export/nbd) and client
// (block/nbdclient) so that each number is written once.
package nbdproto

// Handshake.
const (
	Magic         = 0x4e42444d41474943 // "NBDMAGIC"
	OptMagic      = 0x49484156454f5054 // "IHAVEOPT"
	OptReplyMagic = 0x0003e889045565a9

	FlagFixedNewstyle = 1 << 0
	FlagNoZeroes      = 1 << 1

	OptExportName      = 1
	OptAbort           = 2
	OptList            = 3
	OptStartTLS        = 5
	OptInfo            = 6
	OptGo              = 7
	OptStructuredReply = 8
	OptListMetaContext = 9
	OptSetMetaContext  = 10

	RepAck         = 1
	RepServer      = 2
	RepInfo        = 3
	RepMetaContext = 4

	RepErr             = 1 << 31
	RepErrUnsup        = RepErr | 1
	RepErrPolicy       = RepErr | 2
	RepErrInvalid      = RepErr | 3
	RepErrPlatform     = RepErr | 4
	RepErrTLSReqd      = RepErr | 5
	RepErrUnknown      = RepErr | 6
	RepErrShutdown     = RepErr | 7
	RepErrBlockSizeReq = RepErr | 8
	RepErrTooBig       = RepErr | 9

	InfoExport      = 0
	InfoName        = 1
	InfoDescription = 2
	InfoBlockSize   = 3
)

// Transmission flags.
const (
	FlagHasFlags        = 1 << 0
	FlagReadOnly        = 1 << 1
	FlagSendFlush       = 1 << 2
	FlagSendFUA         = 1 << 3
	FlagSendTrim        = 1 << 5
	FlagSendWriteZeroes = 1 << 6
	FlagSendDF          = 1 << 7
	FlagCanMultiConn    = 1 << 8
	FlagSendCache       = 1 << 10
	FlagSendFastZero    = 1 << 11
)

// Transmission.
const (
	RequestMagic         = 0x25609513
	SimpleReplyMagic     = 0x67446698
	StructuredReplyMagic = 0x668e33ef
	RequestHeaderSize    = 28

	CmdRead        = 0
	CmdWrite       = 1
	CmdDisc        = 2
	CmdFlush       = 3
	CmdTrim        = 4
	CmdCache       = 5
	CmdWriteZeroes = 6
	CmdBlockStatus = 7

	CmdFlagFUA      = 1 << 0
	CmdFlagNoHole   = 1 << 1
	CmdFlagDF       = 1 << 2
	CmdFlagReqOne   = 1 << 3
	CmdFlagFastZero = 1 << 4

	ReplyFlagDone = 1 << 0

	ChunkNone        = 0
	ChunkOffsetData  = 1
	ChunkOffsetHole  = 2
	ChunkBlockStatus = 5
	ChunkError       = 1<<15 | 1

	StateHole = 1 << 0
	StateZero = 1 << 1
	// StateDirty is a qemu:dirty-bitmap context's one flag.
	StateDirty = 1 << 0
)

// Errors (the protocol's own numbers, Linux's where they overlap).
const (
	ErrPerm     = 1
	ErrIO       = 5
	ErrNoMem    = 12
	ErrInval    = 22
	ErrNoSpc    = 28
	ErrOverflow = 75
	ErrNotSup   = 95
	ErrShutdown = 108
)

// Limits, QEMU's: the largest payload (NBD_MAX_BUFFER_SIZE), the longest
// name or description (NBD_MAX_STRING_SIZE).
const (
	MaxPayload = 32 << 20
	MaxString  = 4096
)

// Meta contexts both sides know by name.
const (
	CtxBaseAllocation  = "base:allocation"
	CtxAllocationDepth = "qemu:allocation-depth"
	// CtxDirtyBitmap prefixes a bitmap's name: an export's bitmaps=.
	CtxDirtyBitmap = "qemu:dirty-bitmap:"
)
