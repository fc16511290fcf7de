package objects

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Endpoint is the side of a TLS session credentials are for.
type Endpoint string

const (
	Client Endpoint = "client"
	Server Endpoint = "server"
)

// The files QEMU reads from a tls-creds-x509 object's dir.
const (
	fileCACert     = "ca-cert.pem"
	fileCACRL      = "ca-crl.pem"
	fileServerCert = "server-cert.pem"
	fileServerKey  = "server-key.pem"
	fileClientCert = "client-cert.pem"
	fileClientKey  = "client-key.pem"
	fileDHParams   = "dh-params.pem"
)

// TLSCreds is a loaded tls-creds-x509 object: the CA certificates peers
// are checked against, and this side's own certificate and key (always
// for a server, optional for a client).
type TLSCreds struct {
	Endpoint   Endpoint
	VerifyPeer bool
	Dir        string
	Priority   string

	ca       []*x509.Certificate
	cert     *tls.Certificate // nil: a client without a certificate
	crl      *x509.RevocationList
	min, max uint16 // TLS versions the priority allows
	now      func() time.Time
}

func (*TLSCreds) Type() string { return "tls-creds-x509" }

type pendingX509 struct {
	c        TLSCreds
	hasDir   bool
	sanity   bool
	password string
}

func parseX509(p *props_) (pending, error) {
	var x pendingX509
	var err error
	if x.c.Dir, err = p.str("dir"); err != nil {
		return nil, err
	}
	_, x.hasDir = p.m["dir"]
	ep, err := p.enum("endpoint", "client", "client", "server")
	if err != nil {
		return nil, err
	}
	x.c.Endpoint = Endpoint(ep)
	if x.c.VerifyPeer, err = p.boolean("verify-peer", true); err != nil {
		return nil, err
	}
	if x.c.Priority, err = p.str("priority"); err != nil {
		return nil, err
	}
	if x.sanity, err = p.boolean("sanity-check", true); err != nil {
		return nil, err
	}
	if x.password, err = p.str("passwordid"); err != nil {
		return nil, err
	}
	if err := p.readOnly("tls-creds-x509", "loaded"); err != nil {
		return nil, err
	}
	return &x, nil
}

// complete loads the credentials as qcrypto_tls_creds_x509_load does,
// in its order and words.
func (x *pendingX509) complete(r *Registry, id string) (Object, error) {
	c := x.c
	c.now = time.Now
	var err error
	if c.min, c.max, err = parsePriority(c.Priority); err != nil {
		return nil, err
	}
	if !x.hasDir {
		return nil, errors.New("Missing 'dir' property value")
	}
	var cacert, cacrl, cert, key, dh string
	if c.Endpoint == Server {
		cacert, err = credPath(c.Dir, fileCACert, true)
		if err == nil {
			cacrl, err = credPath(c.Dir, fileCACRL, false)
		}
		if err == nil {
			cert, err = credPath(c.Dir, fileServerCert, true)
		}
		if err == nil {
			key, err = credPath(c.Dir, fileServerKey, true)
		}
		if err == nil {
			dh, err = credPath(c.Dir, fileDHParams, false)
		}
	} else {
		cacert, err = credPath(c.Dir, fileCACert, true)
		if err == nil {
			cert, err = credPath(c.Dir, fileClientCert, false)
		}
		if err == nil {
			key, err = credPath(c.Dir, fileClientKey, false)
		}
	}
	if err != nil {
		return nil, err
	}
	if x.sanity {
		if err := sanityCheck(c.Endpoint == Server, cacert, cert, c.now()); err != nil {
			return nil, err
		}
	}
	if c.ca, err = loadCAs(cacert); err != nil {
		return nil, err
	}
	if cert != "" && key != "" {
		if x.password != "" {
			return nil, fmt.Errorf("Cannot load certificate '%s' & key '%s': minivmm reads unencrypted keys only (passwordid)", cert, key)
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("Cannot load certificate '%s' & key '%s': %v", cert, key, err)
		}
		c.cert = &pair
	}
	if cacrl != "" {
		if c.crl, err = loadCRL(cacrl, c.ca); err != nil {
			return nil, err
		}
	}
	if dh != "" {
		// Go's TLS has finite-field Diffie-Hellman in no cipher suite
		// (ECDHE only): the parameters are checked, not used.
		if err := checkDHParams(dh); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

// credPath is qcrypto_tls_creds_get_path: dir/name if readable; a
// missing optional file is "".
func credPath(dir, name string, required bool) (string, error) {
	p := dir + "/" + name
	if err := unix.Access(p, unix.R_OK); err != nil {
		if err == unix.ENOENT && !required {
			return "", nil
		}
		return "", fmt.Errorf("Unable to access credentials %s: %s", p, errnoText(err))
	}
	return p, nil
}

func errnoText(err error) string {
	var e unix.Errno
	if errors.As(err, &e) {
		s := e.Error()
		return strings.ToUpper(s[:1]) + s[1:]
	}
	return err.Error()
}

// loadCAs reads every certificate of a PEM file.
func loadCAs(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("Cannot load CA certificate '%s': %v", path, err)
	}
	certs, err := parseCerts(b)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("Cannot load CA certificate '%s': no PEM certificate in the file", path)
	}
	return certs, nil
}

// parseCerts parses the CERTIFICATE blocks of a PEM file.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, nil
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

func loadCRL(path string, ca []*x509.Certificate) (*x509.RevocationList, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("Cannot load CRL '%s': %v", path, err)
	}
	der := b
	if blk, _ := pem.Decode(b); blk != nil {
		der = blk.Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("Cannot load CRL '%s': %v", path, err)
	}
	for _, c := range ca {
		if crl.CheckSignatureFrom(c) == nil {
			return crl, nil
		}
	}
	return nil, fmt.Errorf("Cannot load CRL '%s': not signed by a CA of %s", path, fileCACert)
}

func checkDHParams(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("Unable to read %s: %v", path, err)
	}
	if blk, _ := pem.Decode(b); blk == nil || blk.Type != "DH PARAMETERS" {
		return fmt.Errorf("Unable to load DH parameters from %s: no PEM DH PARAMETERS", path)
	}
	return nil
}

// parsePriority takes the GnuTLS priority strings whose meaning Go's TLS
// can keep: a base keyword, then versions taken away or put back.
// Anything else (cipher lists, %COMPAT...) is refused rather than
// silently ignored.
func parsePriority(s string) (min, max uint16, err error) {
	if s == "" {
		return tls.VersionTLS12, tls.VersionTLS13, nil
	}
	parts := strings.Split(s, ":")
	switch parts[0] {
	case "NORMAL", "@SYSTEM", "PERFORMANCE", "SECURE128", "SECURE192", "SECURE256":
	default:
		return 0, 0, fmt.Errorf("minivmm cannot honour TLS priority '%s': its base must be NORMAL, @SYSTEM, PERFORMANCE or SECUREnnn", s)
	}
	on := map[uint16]bool{tls.VersionTLS12: true, tls.VersionTLS13: true}
	vers := map[string]uint16{"VERS-TLS1.2": tls.VersionTLS12, "VERS-TLS1.3": tls.VersionTLS13}
	for _, p := range parts[1:] {
		if p == "-VERS-ALL" {
			clear(on)
			continue
		}
		v, ok := vers[strings.TrimLeft(p, "+-")]
		if !ok || len(p) < 2 || (p[0] != '+' && p[0] != '-') {
			return 0, 0, fmt.Errorf("minivmm cannot honour TLS priority '%s': Go's TLS takes only [+-]VERS-TLS1.2, [+-]VERS-TLS1.3 and -VERS-ALL after the base, not '%s'", s, p)
		}
		on[v] = p[0] == '+'
	}
	switch {
	case on[tls.VersionTLS12] && on[tls.VersionTLS13]:
		return tls.VersionTLS12, tls.VersionTLS13, nil
	case on[tls.VersionTLS12]:
		return tls.VersionTLS12, tls.VersionTLS12, nil
	case on[tls.VersionTLS13]:
		return tls.VersionTLS13, tls.VersionTLS13, nil
	}
	return 0, 0, fmt.Errorf("minivmm cannot honour TLS priority '%s': it leaves no TLS version", s)
}

// LookupTLSCreds finds credentials for an endpoint, as the NBD server and
// client do (nbd_get_tls_creds), in their words.
func (r *Registry) LookupTLSCreds(id string, ep Endpoint) (*TLSCreds, error) {
	o, ok := r.Get(id)
	if !ok {
		return nil, fmt.Errorf("No TLS credentials with id '%s'", id)
	}
	c, ok := o.(*TLSCreds)
	if !ok {
		return nil, fmt.Errorf("Object with id '%s' is not TLS credentials", id)
	}
	if c.Endpoint != ep {
		return nil, fmt.Errorf("Expected TLS credentials for a %s endpoint", ep)
	}
	return c, nil
}
