package nbdclient

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"minivmm/block"
	"minivmm/block/nbdproto"
	"minivmm/block/objects"
)

func init() {
	block.Register(&block.Driver{
		Name: "nbd",
		Options: map[string]block.OptType{
			"server": block.OptObject, "export": block.OptString, "reconnect-delay": block.OptInt,
			"x-dirty-bitmap": block.OptString,
			"tls-creds":      block.OptString, "tls-hostname": block.OptString,
			// An NBD URL, as a filename opens one.
			"filename": block.OptString,
		},
		Prefixes: []string{"nbd://", "nbd+tcp://", "nbd+unix://"},
		Open:     open,
	})
}

// image is an open NBD node: one connection, remade on loss within
// reconnect-delay.
type image struct {
	srv    Server
	export string
	delay  time.Duration
	// exportGiven: an "export" option was given, if empty (the URL that
	// names the node then ends in a slash, as QEMU's).
	exportGiven bool
	writable    bool
	ctx         string      // the block status context: base:allocation or x-dirty-bitmap
	tlsConf     *tls.Config // nil: no TLS

	flags uint16 // the export's transmission flags, at open

	mu   sync.Mutex
	s    *session
	size int64
}

func open(o *block.OpenContext) (block.Image, error) {
	var srv Server
	var export string
	exportGiven := false
	filename, err := o.Options.String("filename", "")
	if err != nil {
		return nil, err
	}
	if filename != "" {
		if _, given := o.Options["server"]; given {
			return nil, errors.New("No 'server' option is allowed together with a URL filename")
		}
		if srv, export, err = ParseURL(filename); err != nil {
			return nil, err
		}
	} else {
		so, err := o.Options.Object("server")
		if err != nil {
			return nil, err
		}
		if so == nil {
			return nil, errors.New("Parameter 'server' is missing")
		}
		if srv.Type, err = so.String("type", ""); err != nil {
			return nil, err
		}
		switch srv.Type {
		case "unix":
			if srv.Path, err = so.String("path", ""); err != nil || srv.Path == "" {
				return nil, errors.New("Parameter 'server.path' is missing")
			}
		case "inet":
			if srv.Host, err = so.String("host", ""); err != nil || srv.Host == "" {
				return nil, errors.New("Parameter 'server.host' is missing")
			}
			if srv.Port, err = so.String("port", "10809"); err != nil {
				return nil, err
			}
		case "":
			return nil, errors.New("Parameter 'server.type' is missing")
		default:
			return nil, fmt.Errorf("minivmm's nbd driver connects to unix or inet servers, not %s", srv.Type)
		}
		if export, err = o.Options.String("export", ""); err != nil {
			return nil, err
		}
		_, exportGiven = o.Options["export"]
	}
	delay, err := o.Options.Int("reconnect-delay", 0)
	if err != nil {
		return nil, err
	}
	if delay < 0 || delay > 1<<31 {
		return nil, errors.New("Parameter 'reconnect-delay' expects uint32_t")
	}
	// x-dirty-bitmap (QEMU's debugging option, which qemu-img map uses to
	// read a bitmap) asks for that context in place of base:allocation:
	// its dirty flag, bit 0, reads as a hole, so dirty areas map as
	// unallocated and clean ones as data.
	ctx, err := o.Options.String("x-dirty-bitmap", nbdproto.CtxBaseAllocation)
	if err != nil {
		return nil, err
	}
	tlsConf, err := clientTLS(o, srv)
	if err != nil {
		return nil, err
	}
	s, err := dial(srv, export, ctx, tlsConf)
	if errors.As(err, new(negotiationError)) {
		return nil, err
	}
	if dnsErr := new(net.DNSError); errors.As(err, &dnsErr) {
		return nil, resolutionError(srv, dnsErr)
	}
	if err != nil {
		return nil, fmt.Errorf("Failed to connect to '%s': %w", srv.display(), err)
	}
	if ctx != nbdproto.CtxBaseAllocation && !s.haveStatus {
		s.close()
		return nil, fmt.Errorf("requested x-dirty-bitmap %s not found", ctx)
	}
	if o.Writable && s.flags&nbdproto.FlagReadOnly != 0 {
		s.close()
		return nil, errors.New("NBD export is read-only")
	}
	return &image{srv: srv, export: export, exportGiven: exportGiven, delay: time.Duration(delay) * time.Second, writable: o.Writable, ctx: ctx, tlsConf: tlsConf, flags: s.flags, s: s, size: s.size}, nil
}

// clientTLS is the TLS configuration tls-creds and tls-hostname ask
// for (nil without tls-creds). As QEMU 7.2's driver, the hostname
// checked is tls-hostname, else an inet server's host; a unix socket
// without tls-hostname has none, which verify-peer refuses at the
// handshake.
func clientTLS(o *block.OpenContext, srv Server) (*tls.Config, error) {
	id, err := o.Options.String("tls-creds", "")
	if err != nil || id == "" {
		return nil, err
	}
	creds, err := o.Objects.LookupTLSCreds(id, objects.Client)
	if err != nil {
		return nil, err
	}
	host, err := o.Options.String("tls-hostname", "")
	if err != nil {
		return nil, err
	}
	if host == "" && srv.Type == "inet" {
		host = srv.Host
	}
	return creds.ClientConfig(host), nil
}

func (s Server) display() string {
	if s.Type == "unix" {
		return s.Path
	}
	return s.Host + ":" + s.Port
}

// session returns the connection, remaking a broken one: with
// reconnect-delay, tries for that long; without, fails at once.
func (m *image) session() (*session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.s != nil {
		m.s.mu.Lock()
		broken := m.s.err != nil
		m.s.mu.Unlock()
		if !broken {
			return m.s, nil
		}
	}
	deadline := time.Now().Add(m.delay)
	for {
		s, err := dial(m.srv, m.export, m.ctx, m.tlsConf)
		if err == nil && s.size == m.size {
			m.s = s
			return s, nil
		}
		if err == nil {
			s.close()
			err = errors.New("export changed size")
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("Connection closed: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// do runs a request, once more on a new connection if the first broke
// and reconnect-delay allows.
func (m *image) do(typ, flags uint16, off uint64, length uint32, payload []byte, c *call) error {
	for attempt := 0; ; attempt++ {
		s, err := m.session()
		if err != nil {
			return err
		}
		err = s.do(typ, flags, off, length, payload, c)
		if !errors.Is(err, errClosed) || m.delay == 0 || attempt > 0 {
			return err
		}
	}
}

func (m *image) ReadAt(p []byte, off int64) (int, error) {
	for done := 0; done < len(p); {
		n := min(len(p)-done, nbdproto.MaxPayload)
		if err := m.do(nbdproto.CmdRead, 0, uint64(off)+uint64(done), uint32(n), nil, &call{buf: p[done : done+n]}); err != nil {
			return done, err
		}
		done += n
	}
	return len(p), nil
}

func (m *image) WriteAt(p []byte, off int64) (int, error) {
	for done := 0; done < len(p); {
		n := min(len(p)-done, nbdproto.MaxPayload)
		if err := m.do(nbdproto.CmdWrite, 0, uint64(off)+uint64(done), uint32(n), p[done:done+n], &call{}); err != nil {
			return done, err
		}
		done += n
	}
	return len(p), nil
}

// ranged sends a request without payload over [off, off+n) in pieces a
// 32-bit length holds.
func (m *image) ranged(typ, flags uint16, off, n int64) error {
	for n > 0 {
		l := min(n, 1<<30)
		if err := m.do(typ, flags, uint64(off), uint32(l), nil, &call{}); err != nil {
			return err
		}
		off, n = off+l, n-l
	}
	return nil
}

// WriteZeroes passes zeroing through: the server zeroes, no data
// crosses the wire.
func (m *image) WriteZeroes(off, n int64, unmap bool) error {
	if m.flags&nbdproto.FlagSendWriteZeroes == 0 {
		return block.ErrNotSupported
	}
	var f uint16
	if !unmap {
		f |= nbdproto.CmdFlagNoHole
	}
	return m.ranged(nbdproto.CmdWriteZeroes, f, off, n)
}

// WriteZeroesFast asks the server for zeroing without fallback
// (NBD_CMD_FLAG_FAST_ZERO), where it offers that; its ENOTSUP is the
// block layer's ErrNotSupported, the server having changed nothing.
func (m *image) WriteZeroesFast(off, n int64, unmap bool) error {
	if m.flags&nbdproto.FlagSendWriteZeroes == 0 || m.flags&nbdproto.FlagSendFastZero == 0 {
		return block.ErrNotSupported
	}
	f := uint16(nbdproto.CmdFlagFastZero)
	if !unmap {
		f |= nbdproto.CmdFlagNoHole
	}
	err := m.ranged(nbdproto.CmdWriteZeroes, f, off, n)
	if errors.Is(err, syscall.ENOTSUP) {
		return fmt.Errorf("%w (%w)", block.ErrNotSupported, err)
	}
	return err
}

func (m *image) Discard(off, n int64) error {
	if m.flags&nbdproto.FlagSendTrim == 0 {
		return nil // discard is advisory
	}
	return m.ranged(nbdproto.CmdTrim, 0, off, n)
}

func (m *image) Flush() error {
	if m.flags&nbdproto.FlagSendFlush == 0 {
		return nil
	}
	return m.do(nbdproto.CmdFlush, 0, 0, 0, nil, &call{})
}

// BlockStatus asks the server's base:allocation (or x-dirty-bitmap's
// context) for the first extent at off.
func (m *image) BlockStatus(off, n int64) (block.Status, int64, error) {
	s, err := m.session()
	if err != nil {
		return block.Status{}, 0, err
	}
	if !s.haveStatus {
		return block.Status{Data: true, Allocated: true, Offset: -1}, n, nil
	}
	n = min(n, 1<<30)
	var got bool
	var length, flags uint32
	c := &call{extent: func(l, f uint32) {
		if !got {
			got, length, flags = true, l, f
		}
	}}
	if err := m.do(nbdproto.CmdBlockStatus, 0, uint64(off), uint32(n), nil, c); err != nil {
		return block.Status{}, 0, err
	}
	if !got || length == 0 {
		return block.Status{}, 0, errors.New("server sent no block status")
	}
	// The export's offsets are the node's, as QEMU's driver maps them; a
	// hole that does not read as zeroes is not allocated (QEMU's generic
	// block status: allocated is data or zero).
	data, zero := flags&nbdproto.StateHole == 0, flags&nbdproto.StateZero != 0
	return block.Status{Data: data, Zero: zero, Allocated: data || zero, Offset: off}, min(int64(length), n), nil
}

func (m *image) Length() (int64, error) { return m.size, nil }

func (m *image) Filename() string { return m.srv.URL(m.export) }

func (m *image) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.s != nil {
		m.s.close()
	}
	return nil
}
