package nbdclient

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

	"minivmm/block/nbdproto"
)

// session is one connection in transmission: requests go out under wmu,
// replies are read by one goroutine and handed to their request by
// handle.
type session struct {
	nc         net.Conn
	size       int64
	flags      uint16
	baseID     uint32 // the block status context's id
	haveStatus bool   // the server has that context

	wmu     sync.Mutex
	mu      sync.Mutex
	next    uint64
	pending map[uint64]*call
	err     error // set once the connection broke
}

// call is a request waiting for its reply.
type call struct {
	buf    []byte // a read's destination
	off    uint64
	extent func(length, flags uint32)
	done   chan error
}

// dial connects and negotiates export with a fixed newstyle handshake:
// structured replies, the block status context ctx (base:allocation or
// x-dirty-bitmap's), NBD_OPT_GO. With tlsConf, the connection starts TLS
// first (NBD_OPT_STARTTLS).
func dial(srv Server, export, ctx string, tlsConf *tls.Config) (*session, error) {
	network, addr := srv.network()
	nc, err := net.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	s, err := handshake(nc, export, ctx, tlsConf)
	if err != nil {
		nc.Close()
		return nil, err
	}
	go s.readLoop(bufio.NewReaderSize(s.nc, 256<<10))
	return s, nil
}

func handshake(nc net.Conn, export, ctx string, tlsConf *tls.Config) (*session, error) {
	var h [18]byte
	if _, err := io.ReadFull(nc, h[:]); err != nil {
		return nil, err
	}
	if binary.BigEndian.Uint64(h[0:]) != nbdproto.Magic || binary.BigEndian.Uint64(h[8:]) != nbdproto.OptMagic {
		return nil, errors.New("server does not speak fixed newstyle NBD")
	}
	if binary.BigEndian.Uint16(h[16:])&1 == 0 {
		return nil, errors.New("server does not speak fixed newstyle NBD")
	}
	if _, err := nc.Write([]byte{0, 0, 0, 3}); err != nil { // FIXED_NEWSTYLE|NO_ZEROES
		return nil, err
	}
	if tlsConf != nil {
		tc, err := startTLS(nc, tlsConf)
		if err != nil {
			return nil, err
		}
		nc = tc
	}
	s := &session{nc: nc, pending: map[uint64]*call{}}
	option := func(opt uint32, data []byte) error {
		p := binary.BigEndian.AppendUint64(nil, nbdproto.OptMagic)
		p = binary.BigEndian.AppendUint32(p, opt)
		p = binary.BigEndian.AppendUint32(p, uint32(len(data)))
		_, err := nc.Write(append(p, data...))
		return err
	}
	reply := func(opt uint32) (uint32, []byte, error) {
		var r [20]byte
		if _, err := io.ReadFull(nc, r[:]); err != nil {
			return 0, nil, err
		}
		if binary.BigEndian.Uint64(r[:]) != nbdproto.OptReplyMagic || binary.BigEndian.Uint32(r[8:]) != opt {
			return 0, nil, errors.New("bad option reply from the server")
		}
		n := binary.BigEndian.Uint32(r[16:])
		if n > 1<<20 {
			return 0, nil, errors.New("option reply too long")
		}
		data := make([]byte, n)
		_, err := io.ReadFull(nc, data)
		return binary.BigEndian.Uint32(r[12:]), data, err
	}
	structured := false
	if err := option(nbdproto.OptStructuredReply, nil); err != nil {
		return nil, err
	}
	typ, _, err := reply(nbdproto.OptStructuredReply)
	if err != nil {
		return nil, err
	}
	structured = typ == nbdproto.RepAck
	// A TLS server refuses every option before STARTTLS; QEMU goes on
	// to NBD_OPT_GO and reports that one's refusal.
	tlsReqd := typ == nbdproto.RepErrTLSReqd
	name := append(binary.BigEndian.AppendUint32(nil, uint32(len(export))), export...)
	if structured {
		q := binary.BigEndian.AppendUint32(append([]byte(nil), name...), 1)
		q = append(q, binary.BigEndian.AppendUint32(nil, uint32(len(ctx)))...)
		q = append(q, ctx...)
		if err := option(nbdproto.OptSetMetaContext, q); err != nil {
			return nil, err
		}
		for {
			typ, data, err := reply(nbdproto.OptSetMetaContext)
			if err != nil {
				return nil, err
			}
			if typ == nbdproto.RepMetaContext && len(data) >= 4 && string(data[4:]) == ctx {
				s.baseID, s.haveStatus = binary.BigEndian.Uint32(data), true
			}
			if typ != nbdproto.RepMetaContext {
				break // ACK, or an error: no block status then
			}
		}
	}
	if !structured && !tlsReqd {
		return nil, errors.New("server does not support structured replies")
	}
	if err := option(nbdproto.OptGo, append(name, 0, 1, 0, nbdproto.InfoBlockSize)); err != nil {
		return nil, err
	}
	for {
		typ, data, err := reply(nbdproto.OptGo)
		if err != nil {
			return nil, err
		}
		switch {
		case typ == nbdproto.RepAck:
			return s, nil
		case typ == nbdproto.RepInfo && len(data) >= 12 && binary.BigEndian.Uint16(data) == nbdproto.InfoExport:
			s.size = int64(binary.BigEndian.Uint64(data[2:]))
			s.flags = binary.BigEndian.Uint16(data[10:])
		case typ == nbdproto.RepErrTLSReqd:
			return nil, negotiationError{replyError(nbdproto.OptGo, "go", typ, data)}
		case typ&(1<<31) != 0:
			return nil, fmt.Errorf("Requested export not available\nserver reported: %s", data)
		}
	}
}

// errClosed fails requests on a connection that has broken.
var errClosed = errors.New("Connection closed")

func (s *session) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	p := s.pending
	s.pending = map[uint64]*call{}
	s.mu.Unlock()
	for _, c := range p {
		c.done <- errClosed
	}
	s.nc.Close()
}

// readLoop reads replies until the connection breaks, completing each
// request when its last chunk arrives.
func (s *session) readLoop(r *bufio.Reader) {
	var h [20]byte
	for {
		if _, err := io.ReadFull(r, h[:4]); err != nil {
			s.fail(err)
			return
		}
		var handle uint64
		var flags, typ uint16
		var length uint32
		var errno uint32
		simple := binary.BigEndian.Uint32(h[:]) == nbdproto.SimpleReplyMagic
		switch binary.BigEndian.Uint32(h[:]) {
		case nbdproto.SimpleReplyMagic:
			if _, err := io.ReadFull(r, h[4:16]); err != nil {
				s.fail(err)
				return
			}
			errno, handle, flags = binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint64(h[8:]), nbdproto.ReplyFlagDone
		case nbdproto.StructuredReplyMagic:
			if _, err := io.ReadFull(r, h[4:20]); err != nil {
				s.fail(err)
				return
			}
			flags, typ = binary.BigEndian.Uint16(h[4:]), binary.BigEndian.Uint16(h[6:])
			handle, length = binary.BigEndian.Uint64(h[8:]), binary.BigEndian.Uint32(h[16:])
		default:
			s.fail(errors.New("bad reply magic"))
			return
		}
		s.mu.Lock()
		c := s.pending[handle]
		s.mu.Unlock()
		if c == nil {
			s.fail(errors.New("reply to an unknown handle"))
			return
		}
		var err error
		if simple {
			if errno != 0 {
				err = errnoError(errno)
			} else if c.buf != nil {
				_, err = io.ReadFull(r, c.buf)
				if err != nil {
					s.fail(err)
					return
				}
			}
		} else if cerr := s.chunk(r, c, typ, length); cerr != nil {
			if !errors.As(cerr, new(serverError)) {
				s.fail(cerr)
				return
			}
			err = cerr
		}
		if flags&nbdproto.ReplyFlagDone != 0 || simple {
			s.mu.Lock()
			delete(s.pending, handle)
			s.mu.Unlock()
			c.done <- err
		} else if err != nil {
			c.buf = nil // keep the first error; later chunks are read off
		}
	}
}

// serverError is an error reply: the request failed, the connection
// goes on.
type serverError struct{ errno syscall.Errno }

func (e serverError) Error() string { return e.errno.Error() }
func (e serverError) Unwrap() error { return e.errno }

func errnoError(e uint32) error {
	switch e {
	case 1, 5, 12, 22, 28, 75, 95, 108:
		return serverError{syscall.Errno(e)}
	}
	return serverError{syscall.EINVAL}
}

// chunk reads one structured chunk's payload into c.
func (s *session) chunk(r *bufio.Reader, c *call, typ uint16, length uint32) error {
	if length > nbdproto.MaxPayload+1024 {
		return errors.New("chunk too long")
	}
	switch typ {
	case nbdproto.ChunkNone:
		return nil
	case nbdproto.ChunkOffsetData:
		var o [8]byte
		if length < 8 {
			return errors.New("bad data chunk")
		}
		if _, err := io.ReadFull(r, o[:]); err != nil {
			return err
		}
		off := binary.BigEndian.Uint64(o[:])
		n := uint64(length - 8)
		if c.buf == nil || off < c.off || off+n > c.off+uint64(len(c.buf)) {
			return errors.New("data chunk outside the request")
		}
		_, err := io.ReadFull(r, c.buf[off-c.off:off-c.off+n])
		return err
	case nbdproto.ChunkOffsetHole:
		var o [12]byte
		if length != 12 {
			return errors.New("bad hole chunk")
		}
		if _, err := io.ReadFull(r, o[:]); err != nil {
			return err
		}
		off, n := binary.BigEndian.Uint64(o[:]), uint64(binary.BigEndian.Uint32(o[8:]))
		if c.buf == nil || off < c.off || off+n > c.off+uint64(len(c.buf)) {
			return errors.New("hole chunk outside the request")
		}
		clear(c.buf[off-c.off : off-c.off+n])
		return nil
	case nbdproto.ChunkBlockStatus:
		p := make([]byte, length)
		if _, err := io.ReadFull(r, p); err != nil {
			return err
		}
		if len(p) < 4 || (len(p)-4)%8 != 0 {
			return errors.New("bad block status chunk")
		}
		if binary.BigEndian.Uint32(p) == s.baseID && c.extent != nil {
			for q := p[4:]; len(q) >= 8; q = q[8:] {
				c.extent(binary.BigEndian.Uint32(q), binary.BigEndian.Uint32(q[4:]))
			}
		}
		return nil
	}
	p := make([]byte, length)
	if _, err := io.ReadFull(r, p); err != nil {
		return err
	}
	if typ&(1<<15) != 0 && len(p) >= 4 {
		return errnoError(binary.BigEndian.Uint32(p))
	}
	return nil // an unknown informational chunk
}

// do sends one request and waits for its reply.
func (s *session) do(typ, flags uint16, off uint64, length uint32, payload []byte, c *call) error {
	c.done = make(chan error, 1)
	c.off = off
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return errClosed
	}
	s.next++
	handle := s.next
	s.pending[handle] = c
	s.mu.Unlock()
	h := make([]byte, 28)
	binary.BigEndian.PutUint32(h[0:], nbdproto.RequestMagic)
	binary.BigEndian.PutUint16(h[4:], flags)
	binary.BigEndian.PutUint16(h[6:], typ)
	binary.BigEndian.PutUint64(h[8:], handle)
	binary.BigEndian.PutUint64(h[16:], off)
	binary.BigEndian.PutUint32(h[24:], length)
	s.wmu.Lock()
	bufs := net.Buffers{h}
	if payload != nil {
		bufs = append(bufs, payload)
	}
	_, err := bufs.WriteTo(s.nc)
	s.wmu.Unlock()
	if err != nil {
		s.fail(err)
	}
	return <-c.done
}

// close says goodbye and closes the connection.
func (s *session) close() error {
	h := make([]byte, 28)
	binary.BigEndian.PutUint32(h[0:], nbdproto.RequestMagic)
	binary.BigEndian.PutUint16(h[6:], nbdproto.CmdDisc)
	s.wmu.Lock()
	s.nc.Write(h)
	s.wmu.Unlock()
	s.fail(errClosed)
	return nil
}
