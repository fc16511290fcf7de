package nbd

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"minivmm/block"
	"minivmm/block/nbdproto"
)

// conn is one client: its handshake state, then its requests.
type conn struct {
	svc *Service
	nc  net.Conn // the socket, or the TLS session over it once STARTTLS is done
	r   *bufio.Reader
	raw net.Conn // the socket: shutdown closes it, under any TLS

	tlsConf *tls.Config // non-nil: TLS required before anything but STARTTLS
	tlsOn   bool

	noZeroes   bool
	structured bool
	meta       metaContexts // selected by NBD_OPT_SET_META_CONTEXT (metactx.go)

	exp     *nbdExport
	out     *replyWriter
	work    chan *request // to idle workers
	workers int           // started, at most maxInFlight
	reqs    sync.WaitGroup
	holding atomic.Bool // the reader has another request at hand
	inline  atomic.Bool // the reader is serving a request itself
	inlineGate

	closeOnce sync.Once
}

func newConn(svc *Service, nc net.Conn) *conn {
	return &conn{svc: svc, nc: nc, raw: nc, r: bufio.NewReaderSize(nc, 64<<10)}
}

// shutdown makes the connection's reads and writes fail, so that serve
// returns; requests in flight still complete against the node.
func (c *conn) shutdown() {
	c.closeOnce.Do(func() { c.raw.Close() })
}

func (c *conn) serve() {
	defer c.shutdown()
	exp, err := c.handshake()
	if err != nil {
		if errors.Is(err, errClose) {
			c.svc.logf("nbd: %v", err)
		}
		return
	}
	if !exp.join(c) {
		return
	}
	defer exp.leave(c)
	c.exp = exp
	// A send buffer that holds a few large read replies: with the
	// default (208 KiB) a 256 KiB reply takes several writes, each
	// waiting for the client to read (nbdcopy's reads cost 3.3 writev
	// and a park each). The kernel caps it at net.core.wmem_max.
	if sb, ok := c.raw.(interface{ SetWriteBuffer(int) error }); ok {
		sb.SetWriteBuffer(sendBuffer)
	}
	// Made after the handshake, on the connection transmission uses.
	c.out = newReplyWriter(c.nc, c.shutdown, c.holding.Load, c.inline.Load)
	c.work = make(chan *request)
	err = c.transmit()
	// Every request in flight completes (and is answered, if the client
	// still listens) before the export may let go of its node; replies
	// held for a next request that never came go out too.
	c.holding.Store(false)
	c.out.flushPending()
	close(c.work)
	c.reqs.Wait()
	c.out.stop()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNRESET) {
		c.svc.logf("nbd: export '%s': %v", exp.name, err)
	}
}

// request is one NBD request as it came off the wire.
type request struct {
	flags, typ uint16
	handle     uint64
	off        uint64
	length     uint32
	payload    []byte // a write's data
}

// transmit reads requests until the client disconnects or breaks the
// protocol, and serves each (serve).
func (c *conn) transmit() error {
	var h [nbdproto.RequestHeaderSize]byte
	for {
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint32(h[0:]) != nbdproto.RequestMagic {
			return fmt.Errorf("%w: bad request magic", errClose)
		}
		rq := &request{
			flags: binary.BigEndian.Uint16(h[4:]), typ: binary.BigEndian.Uint16(h[6:]),
			handle: binary.BigEndian.Uint64(h[8:]), off: binary.BigEndian.Uint64(h[16:]),
			length: binary.BigEndian.Uint32(h[24:]),
		}
		if rq.typ == nbdproto.CmdDisc {
			return io.EOF
		}
		if rq.typ == nbdproto.CmdWrite {
			// The payload follows the header whatever becomes of the
			// request; one too long to read is a stream that cannot be
			// followed any more.
			if rq.length > nbdproto.MaxPayload {
				return fmt.Errorf("%w: write of %d bytes is larger than max len %d", errClose, rq.length, nbdproto.MaxPayload)
			}
			rq.payload = c.svc.bufs.get(int(rq.length))
			if _, err := io.ReadFull(c.r, rq.payload); err != nil {
				c.svc.bufs.put(rq.payload)
				return err
			}
		}
		c.serve1(rq)
	}
}

// serve1 serves one request, inline or on a worker.
//
// The reply batch is held back while the next request is already in the
// buffer (its reply, or another worker's, will join it) and written as
// soon as the reader would wait: for more input, or for a worker. So a
// burst of requests costs one read and one write, not one of each per
// request.
//
// Small reads and writes are served on the reader's own goroutine while
// they prove fast (a page-cache hit takes microseconds, less than
// waking a worker); when inlineSlowOf8 of the last 8 took longer than
// inlineSlow, the next inlineBackoff requests go to workers, which serve
// them in parallel and answer in the order they complete (until an
// inline request returns, replies held in the batch wait for it: one
// request's time at most). Everything else goes to workers.
// Workers are started as requests find none idle, up to maxInFlight, and
// live as long as the connection: a goroutine per request would pay for
// its start and its stack's growth every time. With all busy, the reader
// waits.
func (c *conn) serve1(rq *request) {
	c.holding.Store(c.nextReady())
	defer func() {
		if !c.holding.Load() {
			c.out.flushPending()
		}
	}()
	if c.inlineGate.open() && c.inlinable(rq) {
		t := time.Now()
		c.inline.Store(true)
		c.handle(rq)
		c.inline.Store(false)
		c.inlineGate.served(time.Since(t) > inlineSlow)
		return
	}
	select {
	case c.work <- rq:
		return
	default:
	}
	if c.workers == maxInFlight {
		c.holding.Store(false)
		c.out.flushPending()
		c.work <- rq
		return
	}
	c.workers++
	c.reqs.Add(1)
	go func() {
		defer c.reqs.Done()
		c.handle(rq)
		for rq := range c.work {
			c.handle(rq)
		}
	}()
}

// inlinable: a small read or write that needs no flush.
func (c *conn) inlinable(rq *request) bool {
	switch rq.typ {
	case nbdproto.CmdRead:
		return rq.length <= inlineMax
	case nbdproto.CmdWrite:
		return rq.length <= inlineMax && rq.flags&nbdproto.CmdFlagFUA == 0 && !c.exp.writethrough
	}
	return false
}

// nextReady tells whether the next request is whole in the buffer.
func (c *conn) nextReady() bool {
	if c.r.Buffered() < nbdproto.RequestHeaderSize {
		return false // Peek would wait for the client
	}
	h, _ := c.r.Peek(nbdproto.RequestHeaderSize)
	if binary.BigEndian.Uint16(h[6:]) != nbdproto.CmdWrite {
		return true
	}
	return c.r.Buffered() >= nbdproto.RequestHeaderSize+int(binary.BigEndian.Uint32(h[24:]))
}

// handle serves one request and sends its reply.
func (c *conn) handle(rq *request) {
	defer c.svc.bufs.put(rq.payload)
	if err := c.check(rq); err != nil {
		c.replyError(rq, err)
		return
	}
	b := c.exp.backend
	var err error
	switch rq.typ {
	case nbdproto.CmdRead:
		c.read(rq)
		return
	case nbdproto.CmdBlockStatus:
		c.blockStatus(rq)
		return
	case nbdproto.CmdWrite:
		var f block.WriteFlags
		if rq.flags&nbdproto.CmdFlagFUA != 0 || c.exp.writethrough {
			f |= block.FUA
		}
		_, err = b.WriteV([][]byte{rq.payload}, int64(rq.off), f)
	case nbdproto.CmdFlush:
		err = b.Flush()
	case nbdproto.CmdTrim:
		if rq.length > 0 {
			err = b.Discard(int64(rq.off), int64(rq.length))
		}
		if err == nil && (rq.flags&nbdproto.CmdFlagFUA != 0 || c.exp.writethrough) {
			err = b.Flush()
		}
	case nbdproto.CmdWriteZeroes:
		unmap := rq.flags&nbdproto.CmdFlagNoHole == 0
		switch {
		case rq.flags&nbdproto.CmdFlagFastZero != 0:
			// Zeroed without writing data, or ENOTSUP having changed
			// nothing, so that the client writes instead (a zero
			// length is the question "can you?", answered alike).
			err = b.WriteZeroesFast(int64(rq.off), int64(rq.length), unmap)
		case rq.length > 0:
			err = b.WriteZeroes(int64(rq.off), int64(rq.length), unmap)
		}
		if err == nil && (rq.flags&nbdproto.CmdFlagFUA != 0 || c.exp.writethrough) {
			err = b.Flush()
		}
	case nbdproto.CmdCache:
		// A prefetch: read it, so that the host's cache holds it.
		err = c.prefetch(rq)
	}
	if err != nil {
		c.replyError(rq, err)
		return
	}
	c.replyOK(rq)
}

// nbdError is an error with the NBD errno the client gets.
type nbdError struct {
	errno uint32
	msg   string
}

func (e nbdError) Error() string { return e.msg }

// check is nbd_co_receive_request's validation, with its errnos.
func (c *conn) check(rq *request) error {
	allowed := uint16(nbdproto.CmdFlagFUA)
	switch rq.typ {
	case nbdproto.CmdRead:
		allowed |= nbdproto.CmdFlagDF
		if rq.flags&nbdproto.CmdFlagDF != 0 && !c.structured {
			return nbdError{nbdproto.ErrInval, "DF flag without structured reply"}
		}
		if rq.length > nbdproto.MaxPayload {
			return nbdError{nbdproto.ErrInval, fmt.Sprintf("len (%d) is larger than max len (%d)", rq.length, nbdproto.MaxPayload)}
		}
	case nbdproto.CmdWrite, nbdproto.CmdTrim:
	case nbdproto.CmdWriteZeroes:
		allowed |= nbdproto.CmdFlagNoHole | nbdproto.CmdFlagFastZero
	case nbdproto.CmdBlockStatus:
		allowed |= nbdproto.CmdFlagReqOne
		if !c.structured || !c.meta.any(c.exp) {
			return nbdError{nbdproto.ErrInval, "CMD_BLOCK_STATUS not negotiated"}
		}
	case nbdproto.CmdFlush, nbdproto.CmdCache:
	default:
		return nbdError{nbdproto.ErrInval, fmt.Sprintf("unsupported command %d", rq.typ)}
	}
	if rq.flags&^allowed != 0 {
		return nbdError{nbdproto.ErrInval, fmt.Sprintf("unsupported flags 0x%x", rq.flags)}
	}
	size := uint64(c.exp.backend.Length())
	if rq.typ != nbdproto.CmdFlush && (rq.off > size || uint64(rq.length) > size-rq.off) {
		errno := uint32(nbdproto.ErrInval)
		if rq.typ == nbdproto.CmdWrite || rq.typ == nbdproto.CmdWriteZeroes {
			errno = nbdproto.ErrNoSpc
		}
		return nbdError{errno, fmt.Sprintf("operation past EOF; From: %d, Len: %d, Size: %d", rq.off, rq.length, size)}
	}
	if !c.exp.writable {
		switch rq.typ {
		case nbdproto.CmdWrite, nbdproto.CmdTrim, nbdproto.CmdWriteZeroes:
			return nbdError{nbdproto.ErrPerm, "export is read-only"}
		}
	}
	if rq.typ == nbdproto.CmdBlockStatus && rq.length == 0 {
		return nbdError{nbdproto.ErrInval, "need non-zero length"}
	}
	return nil
}

// errnoOf is QEMU's system_errno_to_nbd_errno for a block layer error;
// one without an errno is an I/O error.
func errnoOf(err error) uint32 {
	var ne nbdError
	if errors.As(err, &ne) {
		return ne.errno
	}
	var e syscall.Errno
	if !errors.As(err, &e) {
		if errors.Is(err, block.ErrNotSupported) {
			return nbdproto.ErrNotSup
		}
		return nbdproto.ErrIO
	}
	switch e {
	case syscall.EPERM, syscall.EROFS:
		return nbdproto.ErrPerm
	case syscall.EIO:
		return nbdproto.ErrIO
	case syscall.ENOMEM:
		return nbdproto.ErrNoMem
	case syscall.EDQUOT, syscall.EFBIG, syscall.ENOSPC:
		return nbdproto.ErrNoSpc
	case syscall.EOVERFLOW:
		return nbdproto.ErrOverflow
	case syscall.ENOTSUP:
		return nbdproto.ErrNotSup
	case syscall.ESHUTDOWN:
		return nbdproto.ErrShutdown
	}
	return nbdproto.ErrInval
}

// send writes one reply, whole; bufs may be reused once it returns.
func (c *conn) send(bufs ...[]byte) { c.out.send(bufs...) }

func simpleHeader(errno uint32, handle uint64) []byte {
	p := make([]byte, 16)
	binary.BigEndian.PutUint32(p[0:], nbdproto.SimpleReplyMagic)
	binary.BigEndian.PutUint32(p[4:], errno)
	binary.BigEndian.PutUint64(p[8:], handle)
	return p
}

func chunkHeader(flags, typ uint16, handle uint64, length int) []byte {
	p := make([]byte, 20)
	binary.BigEndian.PutUint32(p[0:], nbdproto.StructuredReplyMagic)
	binary.BigEndian.PutUint16(p[4:], flags)
	binary.BigEndian.PutUint16(p[6:], typ)
	binary.BigEndian.PutUint64(p[8:], handle)
	binary.BigEndian.PutUint32(p[16:], uint32(length))
	return p
}

func (c *conn) replyOK(rq *request) {
	if c.structured && (rq.typ == nbdproto.CmdRead || rq.typ == nbdproto.CmdBlockStatus) {
		c.send(chunkHeader(nbdproto.ReplyFlagDone, nbdproto.ChunkNone, rq.handle, 0))
		return
	}
	c.send(simpleHeader(0, rq.handle))
}

// replyError answers a failed request: with an error chunk carrying the
// message where structured replies are on, else with the errno alone.
func (c *conn) replyError(rq *request, err error) {
	errno := errnoOf(err)
	if !c.structured || rq.typ != nbdproto.CmdRead && rq.typ != nbdproto.CmdBlockStatus {
		c.send(simpleHeader(errno, rq.handle))
		return
	}
	msg := err.Error()
	if len(msg) > nbdproto.MaxString {
		msg = msg[:nbdproto.MaxString]
	}
	p := binary.BigEndian.AppendUint32(nil, errno)
	p = binary.BigEndian.AppendUint16(p, uint16(len(msg)))
	p = append(p, msg...)
	c.send(chunkHeader(nbdproto.ReplyFlagDone, nbdproto.ChunkError, rq.handle, len(p)), p)
}

// prefetch reads a range and forgets it (NBD_CMD_CACHE).
func (c *conn) prefetch(rq *request) error {
	const chunk = 1 << 20
	buf := c.svc.bufs.get(int(min(rq.length, chunk)))
	defer c.svc.bufs.put(buf)
	for done := uint32(0); done < rq.length; {
		n := min(rq.length-done, chunk)
		if _, err := c.exp.backend.ReadAt(buf[:n], int64(rq.off+uint64(done))); err != nil {
			return err
		}
		done += n
	}
	return nil
}
