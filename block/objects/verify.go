package objects

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
)

// PeerError is a TLS peer refused by the credentials' checks, in QEMU's
// words (qcrypto_tls_session_check_certificate).
type PeerError struct{ Msg string }

func (e *PeerError) Error() string { return e.Msg }

// checkPeer checks the peer's certificate chain as QEMU does once the
// handshake is done: trusted by the CAs, within its times, and (for a
// client) issued for hostname.
func (c *TLSCreds) checkPeer(certs []*x509.Certificate, hostname string, authz func(*x509.Certificate) error) error {
	if len(certs) == 0 {
		return &PeerError{"Verify failed: No certificate was found."}
	}
	now := c.now()
	if reason := verifyChain(certs[0], certs[1:], c.ca, c.crl, now); reason != "" {
		return &PeerError{reason}
	}
	for _, cert := range certs {
		if now.After(cert.NotAfter) {
			return &PeerError{"The certificate has expired"}
		}
		if now.Before(cert.NotBefore) {
			return &PeerError{"The certificate is not yet activated"}
		}
	}
	if c.Endpoint == Server {
		if authz != nil {
			if err := authz(certs[0]); err != nil {
				return &PeerError{err.Error()}
			}
		}
		return nil
	}
	if hostname == "" {
		return &PeerError{"No hostname for certificate validation"}
	}
	if !matchHostname(certs[0], hostname) {
		return &PeerError{fmt.Sprintf("Certificate does not match the hostname %s", hostname)}
	}
	return nil
}

// matchHostname is gnutls_x509_crt_check_hostname: the subject
// alternative names, or the common name when the certificate has no DNS
// name (which Go's VerifyHostname no longer looks at).
func matchHostname(cert *x509.Certificate, host string) bool {
	if cert.VerifyHostname(host) == nil {
		return true
	}
	return len(cert.DNSNames) == 0 && len(cert.IPAddresses) == 0 && cert.Subject.CommonName != "" &&
		strings.EqualFold(cert.Subject.CommonName, strings.TrimSuffix(host, "."))
}

// ServerConfig is the TLS configuration of a server with these
// credentials: with verify-peer, clients are asked for a certificate and
// refused without a good one, or one authz (tls-authz; nil: none)
// refuses.
func (c *TLSCreds) ServerConfig(authz func(*x509.Certificate) error) *tls.Config {
	cfg := &tls.Config{MinVersion: c.min, MaxVersion: c.max}
	if c.cert != nil {
		cfg.Certificates = []tls.Certificate{*c.cert}
	}
	if c.VerifyPeer {
		// Asked, not required of the handshake: checkPeer refuses, in
		// QEMU's words, as QEMU checks once the handshake is done.
		cfg.ClientAuth = tls.RequestClientCert
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return c.checkPeer(cs.PeerCertificates, "", authz) }
	}
	return cfg
}

// ClientConfig is the TLS configuration of a client with these
// credentials connecting to hostname ("" when none is known: a unix
// socket without tls-hostname, which verify-peer refuses).
func (c *TLSCreds) ClientConfig(hostname string) *tls.Config {
	// Go's own verification is replaced by checkPeer, which checks the
	// same things and says QEMU's words.
	cfg := &tls.Config{MinVersion: c.min, MaxVersion: c.max, InsecureSkipVerify: true, ServerName: hostname}
	if c.cert != nil {
		cfg.Certificates = []tls.Certificate{*c.cert}
	}
	if c.VerifyPeer {
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return c.checkPeer(cs.PeerCertificates, hostname, nil) }
	}
	return cfg
}
