package nbd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"minivmm/block"
	"minivmm/block/export"
	"minivmm/block/nbdproto"
	"minivmm/block/objects"
)

// ExportType is the BlockExportType of these exports.
const ExportType = "nbd"

// ExportOptions are an NBD export's (BlockExportOptions with
// BlockExportOptionsNbd).
type ExportOptions struct {
	ID, NodeName string
	// Name is the export name clients ask for; "" is the node name.
	Name, Description string
	Writable          bool
	Writethrough      bool
	// AllocationDepth offers the qemu:allocation-depth meta context.
	AllocationDepth bool
	// Bitmaps are offered as qemu:dirty-bitmap:NAME contexts; a Node ""
	// is looked for down the export's chain.
	Bitmaps []block.BitmapRef
}

// ExportType makes ExportOptions an export.Options.
func (o ExportOptions) ExportType() string { return ExportType }

// Common makes ExportOptions an export.Options.
func (o ExportOptions) Common() export.Common {
	return export.Common{ID: o.ID, NodeName: o.NodeName, Writable: o.Writable, Writethrough: o.Writethrough}
}

// ServerOptions are -nbd-server's and nbd-server-start's.
type ServerOptions struct {
	// Network is "unix" or "tcp" ("tcp4", "tcp6": ipv4=on, ipv6=on);
	// Address a socket path or host:port.
	Network, Address string
	// MaxConnections is how many clients are served at once (0: no
	// limit); 1 also withdraws the multi-conn flag, as in QEMU.
	MaxConnections uint32
	// TLS (tls-creds): clients must start TLS before anything else and
	// are checked against these server credentials.
	TLS *objects.TLSCreds
	// TLSAuthz (tls-authz) checks each client's certificate; nil: none.
	TLSAuthz func(*x509.Certificate) error
}

// Service is a VMM's NBD server and its exports: at most one server
// listens at a time, and NBD exports exist only while it does.
type Service struct {
	table *export.Table
	logf  func(format string, args ...any)

	mu      sync.Mutex
	srv     *server
	exports map[string]*nbdExport // by export name

	bufs bufPool
}

// NewService registers the NBD export type in table; logf hears of
// clients that broke the protocol and of requests that failed.
func NewService(table *export.Table, logf func(format string, args ...any)) *Service {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	s := &Service{table: table, logf: logf, exports: map[string]*nbdExport{}}
	table.Register(ExportType, s.newExport)
	return s
}

// Running tells whether the server listens.
func (s *Service) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil
}

// Start starts the server (nbd_server_start, with its words).
func (s *Service) Start(o ServerOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("NBD server already running")
	}
	if o.Network == "unix" {
		// A stale socket is replaced, as QEMU does; only a socket, so
		// that a typo cannot delete an image.
		if fi, err := os.Lstat(o.Address); err == nil {
			if fi.Mode()&os.ModeSocket == 0 {
				return fmt.Errorf("Failed to bind socket to %s: Address already in use", o.Address)
			}
			os.Remove(o.Address)
		}
	}
	ln, err := net.Listen(o.Network, o.Address)
	if err != nil {
		return listenError(o, err)
	}
	var tc *tls.Config
	if o.TLS != nil {
		tc = o.TLS.ServerConfig(o.TLSAuthz)
	}
	s.srv = newServer(s, ln, o.MaxConnections, tc)
	return nil
}

func listenError(o ServerOptions, err error) error {
	host, port, _ := net.SplitHostPort(o.Address)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Errorf("address resolution failed for %s:%s: Name or service not known", host, port)
	}
	var addrErr *net.AddrError
	if errors.As(err, &addrErr) && addrErr.Err == "no suitable address found" {
		return fmt.Errorf("address resolution failed for %s:%s: Address family for hostname not supported", host, port)
	}
	var errno syscall.Errno
	text := err.Error()
	if errors.As(err, &errno) {
		text = errnoText(errno)
	}
	if o.Network == "unix" {
		return fmt.Errorf("Failed to bind socket to %s: %s", o.Address, text)
	}
	return fmt.Errorf("Failed to bind socket: %s (%s:%s)", text, host, port)
}

// Stop removes every NBD export (each with its event) and stops the
// server, disconnecting every client.
func (s *Service) Stop() error {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return errors.New("NBD server not running")
	}
	err := s.table.DeleteType(ExportType)
	srv.close()
	s.mu.Lock()
	s.srv = nil
	s.mu.Unlock()
	return err
}

// Close stops the server if it runs, as the VMM exits (after the
// export table has closed its exports).
func (s *Service) Close() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.close()
	}
}

func (s *Service) lookup(name string) *nbdExport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exports[name]
}

func (s *Service) list() []*nbdExport {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*nbdExport, 0, len(s.exports))
	for _, e := range s.exports {
		out = append(out, e)
	}
	return out
}

// newExport is the export table's constructor for NBD exports
// (nbd_export_create's checks and words).
func (s *Service) newExport(o export.Options, b *block.Backend) (export.Export, error) {
	no, ok := o.(ExportOptions)
	if !ok {
		return nil, fmt.Errorf("nbd export given %T", o)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return nil, errors.New("NBD server not running")
	}
	name := no.Name
	if name == "" {
		name = no.NodeName
	}
	if len(name) > nbdproto.MaxString {
		return nil, fmt.Errorf("export name '%s' too long", name)
	}
	if len(no.Description) > nbdproto.MaxString {
		return nil, fmt.Errorf("description '%s' too long", no.Description)
	}
	if _, dup := s.exports[name]; dup {
		return nil, fmt.Errorf("NBD server already has export named '%s'", name)
	}
	// Held busy while exported: the monitor may not change nor remove
	// what clients read.
	bitmaps, err := b.Node().AcquireBitmaps(no.Bitmaps, !no.Writable)
	if err != nil {
		return nil, err
	}
	e := &nbdExport{
		svc: s, name: name, description: no.Description, backend: b, bitmaps: bitmaps,
		writable: no.Writable, writethrough: no.Writethrough, allocDepth: no.AllocationDepth,
		multiConn: s.srv.maxConns != 1, conns: map[*conn]struct{}{},
	}
	s.exports[name] = e
	return e, nil
}

// nbdExport is one export: a node under a name, and the clients that
// chose it.
type nbdExport struct {
	svc               *Service
	name, description string
	backend           *block.Backend
	writable          bool
	writethrough      bool
	allocDepth        bool
	multiConn         bool
	bitmaps           []*block.DirtyBitmap // held busy until Close

	mu       sync.Mutex
	closed   bool
	released bool // the bitmaps were let go
	conns    map[*conn]struct{}
	wg       sync.WaitGroup // one per conn in transmission
}

func (e *nbdExport) flags(structured bool) uint16 {
	f := uint16(nbdproto.FlagHasFlags | nbdproto.FlagSendFlush | nbdproto.FlagSendFUA | nbdproto.FlagSendCache)
	if !e.writable {
		f |= nbdproto.FlagReadOnly
	} else {
		// Only a writable export offers what writes (nbd_export_create).
		f |= nbdproto.FlagSendTrim | nbdproto.FlagSendWriteZeroes | nbdproto.FlagSendFastZero
	}
	if structured {
		f |= nbdproto.FlagSendDF
	}
	if e.multiConn {
		f |= nbdproto.FlagCanMultiConn
	}
	return f
}

// join makes c a client of e, unless e is going away.
func (e *nbdExport) join(c *conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.conns[c] = struct{}{}
	e.wg.Add(1)
	return true
}

func (e *nbdExport) leave(c *conn) {
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
	e.wg.Done()
}

// InUse makes nbdExport an export.Export.
func (e *nbdExport) InUse() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.conns) > 0
}

// Close disconnects every client of e once its requests in flight have
// completed, and takes the name away.
func (e *nbdExport) Close() error {
	e.svc.mu.Lock()
	if e.svc.exports[e.name] == e {
		delete(e.svc.exports, e.name)
	}
	e.svc.mu.Unlock()
	e.mu.Lock()
	e.closed = true
	for c := range e.conns {
		c.shutdown()
	}
	e.mu.Unlock()
	e.wg.Wait()
	e.mu.Lock()
	release := !e.released
	e.released = true
	e.mu.Unlock()
	if release {
		block.ReleaseBitmaps(e.bitmaps)
	}
	return nil
}
