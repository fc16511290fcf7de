package objects

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"os"
	"time"
)

// sanityCheck is qcrypto_tls_creds_x509_sanity_check: the own
// certificate and the CAs are checked for times, constraints, usage and
// purpose, and the certificate against the CAs, so that a bad file fails
// when the object is made rather than at a peer's first handshake.
func sanityCheck(isServer bool, cacertFile, certFile string, now time.Time) error {
	var cert *x509.Certificate
	if certFile != "" {
		b, err := os.ReadFile(certFile)
		if err != nil {
			return fmt.Errorf("Cannot load CA cert list %s: %v", certFile, err)
		}
		certs, err := parseCerts(b)
		if err != nil || len(certs) == 0 {
			side := "client"
			if isServer {
				side = "server"
			}
			return fmt.Errorf("Unable to import %s certificate %s: %s", side, certFile, pemError(err))
		}
		cert = certs[0]
	}
	var cas []*x509.Certificate
	if b, err := os.ReadFile(cacertFile); err == nil {
		cas, err = parseCerts(b)
		if err != nil || len(cas) == 0 {
			return fmt.Errorf("Unable to import CA certificate list %s", cacertFile)
		}
	}
	if cert != nil {
		if err := checkCert(cert, certFile, isServer, false, now); err != nil {
			return err
		}
	}
	for _, ca := range cas {
		if err := checkCert(ca, cacertFile, isServer, true, now); err != nil {
			return err
		}
	}
	if cert != nil && len(cas) > 0 {
		if reason := verifyChain(cert, nil, cas, nil, now); reason != "" {
			return fmt.Errorf("Our own certificate %s failed validation against %s: %s", certFile, cacertFile, reason)
		}
	}
	return nil
}

func pemError(err error) string {
	if err != nil {
		return err.Error()
	}
	return "Base64 unexpected header error." // GnuTLS's words for a file with no PEM block
}

var (
	oidKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}
)

func critical(c *x509.Certificate, oid asn1.ObjectIdentifier) (present, crit bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return true, e.Critical
		}
	}
	return false, false
}

// checkCert is qcrypto_tls_creds_check_cert.
func checkCert(c *x509.Certificate, file string, isServer, isCA bool, now time.Time) error {
	who := "client"
	if isServer {
		who = "server"
	}
	if isCA {
		who = "CA"
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("The %s certificate %s has expired", who, file)
	}
	if now.Before(c.NotBefore) {
		return fmt.Errorf("The %s certificate %s is not yet active", who, file)
	}
	side := "client"
	if isServer {
		side = "server"
	}
	switch {
	case c.BasicConstraintsValid && c.IsCA && !isCA:
		return fmt.Errorf("The certificate %s basic constraints show a CA, but we need one for a %s", file, side)
	case c.BasicConstraintsValid && !c.IsCA && isCA:
		return fmt.Errorf("The certificate %s basic constraints do not show a CA", file)
	case !c.BasicConstraintsValid && isCA:
		return fmt.Errorf("The certificate %s is missing basic constraints for a CA", file)
	}
	if present, crit := critical(c, oidKeyUsage); present && crit {
		if isCA && c.KeyUsage&x509.KeyUsageCertSign == 0 {
			return fmt.Errorf("Certificate %s usage does not permit certificate signing", file)
		}
		if !isCA && c.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
			return fmt.Errorf("Certificate %s usage does not permit digital signature", file)
		}
		if !isCA && c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
			return fmt.Errorf("Certificate %s usage does not permit key encipherment", file)
		}
	}
	if isCA {
		return nil
	}
	present, crit := critical(c, oidExtKeyUsage)
	if !present || !crit {
		return nil
	}
	var server, client bool
	for _, u := range c.ExtKeyUsage {
		server = server || u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageAny
		client = client || u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny
	}
	if isServer && !server {
		return fmt.Errorf("Certificate %s purpose does not allow use with a TLS server", file)
	}
	if !isServer && !client {
		return fmt.Errorf("Certificate %s purpose does not allow use with a TLS client", file)
	}
	return nil
}

// verifyChain checks cert (with the intermediates the peer sent) against
// the CAs and the CRL, and says why it fails in GnuTLS's reasons as QEMU
// renders them; "" when it holds.
func verifyChain(cert *x509.Certificate, inter, cas []*x509.Certificate, crl *x509.RevocationList, now time.Time) string {
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	pool := x509.NewCertPool()
	for _, c := range inter {
		pool.AddCert(c)
	}
	chains, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		var ua x509.UnknownAuthorityError
		var ia x509.InsecureAlgorithmError
		switch {
		case errors.As(err, &ua):
			return "The certificate hasn't got a known issuer"
		case errors.As(err, &ia):
			return "The certificate uses an insecure algorithm"
		}
		return "The certificate is not trusted"
	}
	if crl != nil {
		for _, chain := range chains {
			for _, c := range chain {
				for _, e := range crl.RevokedCertificateEntries {
					if e.SerialNumber.Cmp(c.SerialNumber) == 0 && crl.CheckSignatureFrom(chain[len(chain)-1]) == nil {
						return "The certificate has been revoked"
					}
				}
			}
		}
	}
	return ""
}
