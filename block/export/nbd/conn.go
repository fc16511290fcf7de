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
	"syscall"

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
	metaBase   bool // base:allocation selected
	metaDepth  bool // qemu:allocation-depth selected

	exp   *nbdExport
	wmu   sync.Mutex // one reply at a time on the wire
	slots chan struct{}
	reqs  sync.WaitGroup

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
	c.slots = make(chan struct{}, maxInFlight)
	err = c.transmit()
	// Every request in flight completes (and is answered, if the client
	// still listens) before the export may let go of its node.
	c.reqs.Wait()
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
// protocol; each is served on its own goroutine, so replies go out in
// the order requests complete.
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
		c.slots <- struct{}{}
		c.reqs.Add(1)
		go func() {
			defer c.reqs.Done()
			c.handle(rq)
			<-c.slots
		}()
	}
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
		if rq.flags&nbdproto.CmdFlagFastZero != 0 {
			// The block layer cannot promise that zeroing is faster
			// than writing: the client is told to write instead, as the
			// spec allows.
			err = nbdError{nbdproto.ErrNotSup, "fast zeroing is not supported"}
			break
		}
		if rq.length > 0 {
			err = b.WriteZeroes(int64(rq.off), int64(rq.length), rq.flags&nbdproto.CmdFlagNoHole == 0)
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
		if !c.structured || !c.metaBase && !c.metaDepth {
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

// send writes one reply, whole, under the write lock.
func (c *conn) send(bufs ...[]byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	nb := net.Buffers(bufs)
	if _, err := nb.WriteTo(c.nc); err != nil {
		c.shutdown() // the reader sees it and ends the connection
	}
}

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
