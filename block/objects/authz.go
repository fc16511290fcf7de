package objects

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"strings"
)

// AuthzSimple is an authz-simple object: it allows the one identity it
// names, for a TLS server's tls-authz the client certificate's
// distinguished name.
type AuthzSimple struct{ Identity string }

func (*AuthzSimple) Type() string { return "authz-simple" }

type pendingAuthz struct{ identity string }

func parseAuthzSimple(p *props_) (pending, error) {
	if _, ok := p.m["identity"]; !ok {
		return nil, errors.New("Parameter 'identity' is missing")
	}
	id, err := p.str("identity")
	if err != nil {
		return nil, err
	}
	return &pendingAuthz{id}, nil
}

func (a *pendingAuthz) complete(*Registry, string) (Object, error) {
	return &AuthzSimple{Identity: a.identity}, nil
}

// Authorizer returns the check a TLS server makes of a client with
// tls-authz id, as QEMU's qauthz_is_allowed_by_id: the object is looked
// up at each client, so one added or deleted later counts.
func (r *Registry) Authorizer(id string) func(cert *x509.Certificate) error {
	return func(cert *x509.Certificate) error {
		o, ok := r.Get(id)
		if !ok {
			return fmt.Errorf("Cannot find QAuthZ object ID %s", id)
		}
		a, ok := o.(*AuthzSimple)
		if !ok {
			return fmt.Errorf("Object '%s' is not a QAuthZ subclass", id)
		}
		dn := peerName(cert)
		if a.Identity != dn {
			return fmt.Errorf("TLS x509 authz check for %s is denied", dn)
		}
		return nil
	}
}

// peerName is the subject as QEMU 7.2's GnuTLS (gnutls_x509_crt_get_dn)
// writes it and an authz-simple identity names it: RFC 4514's escaping,
// but the parts in the certificate's order (C=GB,O=Org,CN=client), not
// RFC 4514's reversed one.
func peerName(cert *x509.Certificate) string {
	var parts []string
	for _, rdn := range cert.Subject.ToRDNSequence() {
		parts = append(parts, pkix.RDNSequence{rdn}.String())
	}
	return strings.Join(parts, ",")
}
