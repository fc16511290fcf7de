package nbdclient

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"minivmm/block/nbdproto"
	"minivmm/block/objects"
)

// negotiationError is a failure of the handshake a server answered (as
// opposed to one of connecting): QEMU reports it without the
// "Failed to connect" its socket errors have.
type negotiationError struct{ error }

func (e negotiationError) Unwrap() error { return e.error }

// startTLS asks the server for NBD_OPT_STARTTLS, as QEMU's
// nbd_receive_starttls does, and runs the TLS handshake: the rest of the
// negotiation and the transmission go over the session it returns.
func startTLS(nc net.Conn, conf *tls.Config) (net.Conn, error) {
	p := binary.BigEndian.AppendUint64(nil, nbdproto.OptMagic)
	p = binary.BigEndian.AppendUint32(p, nbdproto.OptStartTLS)
	p = binary.BigEndian.AppendUint32(p, 0)
	if _, err := nc.Write(p); err != nil {
		return nil, err
	}
	var r [20]byte
	if _, err := io.ReadFull(nc, r[:]); err != nil {
		return nil, fmt.Errorf("Failed to read option reply: %w", err)
	}
	if binary.BigEndian.Uint64(r[:]) != nbdproto.OptReplyMagic || binary.BigEndian.Uint32(r[8:]) != nbdproto.OptStartTLS {
		return nil, negotiationError{errors.New("Unexpected option reply from the server")}
	}
	typ, n := binary.BigEndian.Uint32(r[12:]), binary.BigEndian.Uint32(r[16:])
	if n > nbdproto.MaxString {
		return nil, negotiationError{errors.New("Option reply too long")}
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(nc, msg); err != nil {
		return nil, fmt.Errorf("Failed to read option reply: %w", err)
	}
	if typ != nbdproto.RepAck {
		return nil, negotiationError{replyError(nbdproto.OptStartTLS, "starttls", typ, msg)}
	}
	tc := tls.Client(nc, conf)
	if err := tc.Handshake(); err != nil {
		var pe *objects.PeerError
		if errors.As(err, &pe) {
			return nil, negotiationError{pe}
		}
		return nil, negotiationError{fmt.Errorf("TLS handshake failed: %v", err)}
	}
	return tc, nil
}

// replyError is nbd_handle_reply_err's wording of an error reply.
func replyError(opt uint32, name string, typ uint32, msg []byte) error {
	var s string
	switch typ {
	case nbdproto.RepErrUnsup:
		if opt == nbdproto.OptStartTLS {
			s = "Server don't support STARTTLS option"
		} else {
			s = fmt.Sprintf("Unsupported option %d (%s)", opt, name)
		}
	case nbdproto.RepErrPolicy:
		s = fmt.Sprintf("Denied by server for option %d (%s)", opt, name)
	case nbdproto.RepErrInvalid:
		s = fmt.Sprintf("Invalid parameters for option %d (%s)", opt, name)
	case nbdproto.RepErrTLSReqd:
		s = fmt.Sprintf("TLS negotiation required before option %d (%s)\nDid you forget a valid tls-creds?", opt, name)
	default:
		s = fmt.Sprintf("Unknown error code when asking for option %d (%s)", opt, name)
	}
	if len(msg) > 0 {
		s += "\nserver reported: " + string(msg)
	}
	return errors.New(s)
}
