package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"minivmm/block/nbdproto"
)

// errClose ends a connection without a reply: the client broke the
// protocol where no reply can say so.
var errClose = errors.New("nbd: client broke the protocol")

// handshake runs the fixed newstyle negotiation (nbd_negotiate) and
// returns the export the client chose, or an error that ends the
// connection (an orderly NBD_OPT_ABORT among them).
func (c *conn) handshake() (*nbdExport, error) {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], nbdproto.Magic)
	binary.BigEndian.PutUint64(hello[8:], nbdproto.OptMagic)
	binary.BigEndian.PutUint16(hello[16:], nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes)
	if _, err := c.nc.Write(hello[:]); err != nil {
		return nil, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.r, cf[:]); err != nil {
		return nil, err
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^(nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes) != 0 {
		return nil, fmt.Errorf("%w: unknown client flags 0x%x received", errClose, flags)
	}
	c.noZeroes = flags&nbdproto.FlagNoZeroes != 0
	for {
		var h [16]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return nil, err
		}
		if binary.BigEndian.Uint64(h[0:]) != nbdproto.OptMagic {
			return nil, fmt.Errorf("%w: bad option magic", errClose)
		}
		opt := binary.BigEndian.Uint32(h[8:])
		length := binary.BigEndian.Uint32(h[12:])
		if length > nbdproto.MaxPayload {
			return nil, fmt.Errorf("%w: option length %d is larger than max len %d", errClose, length, nbdproto.MaxPayload)
		}
		if c.tlsConf != nil && !c.tlsOn {
			if err := c.beforeTLS(opt, length); err != nil {
				return nil, err
			}
			continue
		}
		if opt == nbdproto.OptExportName {
			return c.optExportName(length)
		}
		if length > maxOption {
			if _, err := io.CopyN(io.Discard, c.r, int64(length)); err != nil {
				return nil, err
			}
			if err := c.optError(opt, nbdproto.RepErrTooBig, "option too long"); err != nil {
				return nil, err
			}
			continue
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(c.r, data); err != nil {
			return nil, err
		}
		exp, err := c.option(opt, data)
		if err != nil || exp != nil {
			return exp, err
		}
	}
}

// option answers one option; a non-nil export ends the negotiation
// (NBD_OPT_GO).
func (c *conn) option(opt uint32, data []byte) (*nbdExport, error) {
	switch opt {
	case nbdproto.OptAbort:
		// The spec lets the server reply; QEMU does, and closes.
		c.optReply(opt, nbdproto.RepAck, nil)
		return nil, io.EOF
	case nbdproto.OptList:
		if len(data) != 0 {
			return nil, c.optError(opt, nbdproto.RepErrInvalid, "request option 'list' with nonzero length")
		}
		for _, e := range c.svc.list() {
			p := binary.BigEndian.AppendUint32(nil, uint32(len(e.name)))
			p = append(p, e.name...)
			p = append(p, e.description...)
			if err := c.optReply(opt, nbdproto.RepServer, p); err != nil {
				return nil, err
			}
		}
		return nil, c.optReply(opt, nbdproto.RepAck, nil)
	case nbdproto.OptStartTLS:
		if len(data) != 0 {
			return nil, c.optError(opt, nbdproto.RepErrInvalid, "option 'starttls' has unexpected length")
		}
		if c.tlsConf != nil {
			return nil, c.optError(opt, nbdproto.RepErrInvalid, "TLS already enabled")
		}
		return nil, c.optError(opt, nbdproto.RepErrPolicy, "TLS not configured")
	case nbdproto.OptStructuredReply:
		if len(data) != 0 {
			return nil, c.optError(opt, nbdproto.RepErrInvalid, "request option 'structured reply' with nonzero length")
		}
		if c.structured {
			return nil, c.optError(opt, nbdproto.RepErrInvalid, "structured reply already negotiated")
		}
		c.structured = true
		return nil, c.optReply(opt, nbdproto.RepAck, nil)
	case nbdproto.OptInfo, nbdproto.OptGo:
		return c.optInfo(opt, data)
	case nbdproto.OptListMetaContext, nbdproto.OptSetMetaContext:
		return nil, c.optMeta(opt, data)
	}
	return nil, c.optError(opt, nbdproto.RepErrUnsup, fmt.Sprintf("Unsupported option %d", opt))
}

// optExportName is the old way in: no reply but the export's size and
// flags, and an unknown name closes the connection.
func (c *conn) optExportName(length uint32) (*nbdExport, error) {
	if length > nbdproto.MaxString {
		return nil, fmt.Errorf("%w: export name too long", errClose)
	}
	name := make([]byte, length)
	if _, err := io.ReadFull(c.r, name); err != nil {
		return nil, err
	}
	e := c.svc.lookup(string(name))
	if e == nil {
		return nil, fmt.Errorf("%w: export '%s' not present", errClose, name)
	}
	p := binary.BigEndian.AppendUint64(nil, uint64(e.backend.Length()))
	p = binary.BigEndian.AppendUint16(p, e.flags(c.structured))
	if !c.noZeroes {
		p = append(p, make([]byte, 124)...)
	}
	if _, err := c.nc.Write(p); err != nil {
		return nil, err
	}
	return e, nil
}

// optInfo answers NBD_OPT_INFO and NBD_OPT_GO.
func (c *conn) optInfo(opt uint32, data []byte) (*nbdExport, error) {
	name, rest, ok := takeString(data)
	if !ok || len(rest) < 2 {
		return nil, c.optError(opt, nbdproto.RepErrInvalid, "Bad length received")
	}
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*n {
		return nil, c.optError(opt, nbdproto.RepErrInvalid, "Data length mismatch")
	}
	var wantName, wantDesc bool
	for i := 0; i < n; i++ {
		switch binary.BigEndian.Uint16(rest[2*i:]) {
		case nbdproto.InfoName:
			wantName = true
		case nbdproto.InfoDescription:
			wantDesc = true
		}
	}
	e := c.svc.lookup(name)
	if e == nil {
		return nil, c.optError(opt, nbdproto.RepErrUnknown, fmt.Sprintf("export '%s' not present", name))
	}
	if wantName {
		p := binary.BigEndian.AppendUint16(nil, nbdproto.InfoName)
		if err := c.optReply(opt, nbdproto.RepInfo, append(p, name...)); err != nil {
			return nil, err
		}
	}
	if wantDesc && e.description != "" {
		p := binary.BigEndian.AppendUint16(nil, nbdproto.InfoDescription)
		if err := c.optReply(opt, nbdproto.RepInfo, append(p, e.description...)); err != nil {
			return nil, err
		}
	}
	// Block sizes, always (QEMU sends them unasked): any alignment, 4 KiB
	// preferred, at most the largest payload.
	p := binary.BigEndian.AppendUint16(nil, nbdproto.InfoBlockSize)
	p = binary.BigEndian.AppendUint32(p, 1)
	p = binary.BigEndian.AppendUint32(p, 4096)
	p = binary.BigEndian.AppendUint32(p, nbdproto.MaxPayload)
	if err := c.optReply(opt, nbdproto.RepInfo, p); err != nil {
		return nil, err
	}
	p = binary.BigEndian.AppendUint16(nil, nbdproto.InfoExport)
	p = binary.BigEndian.AppendUint64(p, uint64(e.backend.Length()))
	p = binary.BigEndian.AppendUint16(p, e.flags(c.structured))
	if err := c.optReply(opt, nbdproto.RepInfo, p); err != nil {
		return nil, err
	}
	if err := c.optReply(opt, nbdproto.RepAck, nil); err != nil {
		return nil, err
	}
	if opt == nbdproto.OptGo {
		return e, nil
	}
	return nil, nil
}

// takeString takes a string with a 32-bit length off p.
func takeString(p []byte) (string, []byte, bool) {
	if len(p) < 4 {
		return "", p, false
	}
	n := binary.BigEndian.Uint32(p)
	p = p[4:]
	if uint64(n) > uint64(len(p)) || n > nbdproto.MaxString {
		return "", p, false
	}
	return string(p[:n]), p[n:], true
}

func (c *conn) optReply(opt, typ uint32, data []byte) error {
	p := make([]byte, 20, 20+len(data))
	binary.BigEndian.PutUint64(p[0:], nbdproto.OptReplyMagic)
	binary.BigEndian.PutUint32(p[8:], opt)
	binary.BigEndian.PutUint32(p[12:], typ)
	binary.BigEndian.PutUint32(p[16:], uint32(len(data)))
	_, err := c.nc.Write(append(p, data...))
	return err
}

// optError refuses an option with a message for the client's user; the
// negotiation goes on.
func (c *conn) optError(opt, typ uint32, msg string) error {
	msg = strings.ToValidUTF8(msg, "?")
	if len(msg) > nbdproto.MaxString {
		msg = msg[:nbdproto.MaxString]
	}
	return c.optReply(opt, typ, []byte(msg))
}
