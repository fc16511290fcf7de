package nbd

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"

	"minivmm/block/nbdproto"
	"minivmm/block/objects"
)

// beforeTLS answers an option on a connection that must start TLS first,
// as QEMU's nbd_negotiate_options does: NBD_OPT_STARTTLS upgrades the
// connection, NBD_OPT_EXPORT_NAME (which cannot be refused) closes it,
// anything else gets NBD_REP_ERR_TLS_REQD and the client may go on.
func (c *conn) beforeTLS(opt, length uint32) error {
	switch opt {
	case nbdproto.OptStartTLS:
		if length != 0 {
			// A client that cannot start TLS correctly is dropped.
			if _, err := io.CopyN(io.Discard, c.r, int64(length)); err != nil {
				return err
			}
			c.optError(opt, nbdproto.RepErrInvalid, "option 'starttls' has unexpected length")
			return fmt.Errorf("%w: option 'starttls' has unexpected length", errClose)
		}
		return c.startTLS()
	case nbdproto.OptExportName:
		return fmt.Errorf("%w: Option 0x%x not permitted before TLS", errClose, opt)
	}
	if _, err := io.CopyN(io.Discard, c.r, int64(length)); err != nil {
		return err
	}
	err := c.optError(opt, nbdproto.RepErrTLSReqd, fmt.Sprintf("Option 0x%x not permitted before TLS", opt))
	if opt == nbdproto.OptAbort {
		return io.EOF // the error was the reply; the client leaves
	}
	return err
}

// startTLS acknowledges NBD_OPT_STARTTLS and runs the TLS handshake; the
// rest of the negotiation and the transmission go over the session.
func (c *conn) startTLS() error {
	if err := c.optReply(nbdproto.OptStartTLS, nbdproto.RepAck, nil); err != nil {
		return err
	}
	var under net.Conn = c.raw
	if c.r.Buffered() > 0 {
		// The client did not wait for the ACK: what it sent already is
		// the start of its TLS handshake.
		under = readFirst{Conn: c.raw, r: io.MultiReader(io.LimitReader(c.r, int64(c.r.Buffered())), c.raw)}
	}
	tc := tls.Server(under, c.tlsConf)
	if err := tc.Handshake(); err != nil {
		if pe := new(objects.PeerError); errors.As(err, &pe) {
			return fmt.Errorf("%w: %v", errClose, pe) // QEMU's words for a refused peer
		}
		return fmt.Errorf("%w: TLS handshake failed: %v", errClose, err)
	}
	c.nc, c.r, c.tlsOn = tc, bufio.NewReaderSize(tc, 64<<10), true
	return nil
}

// readFirst is a connection whose reads come from r (bytes already
// buffered, then the connection).
type readFirst struct {
	net.Conn
	r io.Reader
}

func (f readFirst) Read(p []byte) (int, error) { return f.r.Read(p) }
