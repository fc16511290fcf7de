// Package tlstest makes X.509 credentials for tests: a CA and the
// certificates it issues, written in the files a tls-creds-x509 object's
// dir holds, so that minivmm and QEMU's tools read the same ones.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority.
type CA struct {
	Cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	serial  int64
}

// Cert describes a certificate to issue; the zero value of each field is
// the usual choice.
type Cert struct {
	CN        string
	Org       string // O, if any
	Country   string // C, if any
	DNS       []string
	IPs       []net.IP
	Usage     x509.ExtKeyUsage // ServerAuth or ClientAuth
	NotBefore time.Time        // zero: an hour ago
	NotAfter  time.Time        // zero: in a day
	IsCA      bool             // a CA certificate where a leaf is wanted
	NoSAN     bool             // no subject alternative names (CN only)
}

// NewCA makes a CA valid from an hour ago for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, key: key, certPEM: pemOf("CERTIFICATE", der), serial: 1}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// PEM is the CA's certificate (ca-cert.pem).
func (ca *CA) PEM() []byte { return ca.certPEM }

// Issue makes a certificate and its key, both PEM, and its serial.
func (ca *CA) Issue(t testing.TB, c Cert) (certPEM, keyPEM []byte, serial *big.Int) {
	t.Helper()
	key := newKey(t)
	ca.serial++
	subject := pkix.Name{CommonName: c.CN}
	if c.Org != "" {
		subject.Organization = []string{c.Org}
	}
	if c.Country != "" {
		subject.Country = []string{c.Country}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial), Subject: subject,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, BasicConstraintsValid: true, IsCA: c.IsCA,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{c.Usage},
	}
	if !c.NoSAN {
		tmpl.DNSNames, tmpl.IPAddresses = c.DNS, c.IPs
	}
	if c.IsCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf("CERTIFICATE", der), pemOf("PRIVATE KEY", kder), tmpl.SerialNumber
}

// CRL is a revocation list of serials, signed by the CA (ca-crl.pem).
func (ca *CA) CRL(t testing.TB, serials ...*big.Int) []byte {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(24 * time.Hour),
		RevokedCertificateEntries: entries,
	}, ca.Cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf("X509 CRL", der)
}

// Server is a server certificate for localhost and 127.0.0.1.
func Server() Cert {
	return Cert{CN: "localhost", DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Usage: x509.ExtKeyUsageServerAuth}
}

// Client is a client certificate.
func Client() Cert { return Cert{CN: "client", Usage: x509.ExtKeyUsageClientAuth} }

// ServerDir writes a server's dir: ca-cert.pem, server-cert.pem,
// server-key.pem for c.
func (ca *CA) ServerDir(t testing.TB, dir string, c Cert) string {
	t.Helper()
	cert, key, _ := ca.Issue(t, c)
	return WriteDir(t, dir, map[string][]byte{"ca-cert.pem": ca.certPEM, "server-cert.pem": cert, "server-key.pem": key})
}

// ClientDir writes a client's dir: ca-cert.pem, client-cert.pem,
// client-key.pem for c.
func (ca *CA) ClientDir(t testing.TB, dir string, c Cert) string {
	t.Helper()
	cert, key, _ := ca.Issue(t, c)
	return WriteDir(t, dir, map[string][]byte{"ca-cert.pem": ca.certPEM, "client-cert.pem": cert, "client-key.pem": key})
}

// WriteDir makes dir and writes files in it; it returns dir.
func WriteDir(t testing.TB, dir string, files map[string][]byte) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
