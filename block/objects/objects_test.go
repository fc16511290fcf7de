package objects_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minivmm/block/objects"
	"minivmm/cmdline"
	"minivmm/internal/tlstest"
)

func needTool(t testing.TB, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (CI=true)", tool)
		}
		t.Skipf("%s not installed; apt-get install qemu-utils", tool)
	}
}

// dirs writes credentials dirs for the checks below: good ones, and each
// defect QEMU's sanity check knows.
func dirs(t *testing.T) map[string]string {
	t.Helper()
	root := t.TempDir()
	ca := tlstest.NewCA(t, "Test CA")
	other := tlstest.NewCA(t, "Other CA")
	d := map[string]string{}
	mk := func(name string, files map[string][]byte) {
		d[name] = tlstest.WriteDir(t, filepath.Join(root, name), files)
	}
	srv := func(c tlstest.Cert) map[string][]byte {
		cert, key, _ := ca.Issue(t, c)
		return map[string][]byte{"ca-cert.pem": ca.PEM(), "server-cert.pem": cert, "server-key.pem": key}
	}
	mk("server", srv(tlstest.Server()))
	mk("client", func() map[string][]byte {
		cert, key, _ := ca.Issue(t, tlstest.Client())
		return map[string][]byte{"ca-cert.pem": ca.PEM(), "client-cert.pem": cert, "client-key.pem": key}
	}())
	mk("ca-only", map[string][]byte{"ca-cert.pem": ca.PEM()})
	mk("empty", nil)
	expired := tlstest.Server()
	expired.NotBefore, expired.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	mk("expired", srv(expired))
	future := tlstest.Server()
	future.NotBefore, future.NotAfter = time.Now().Add(24*time.Hour), time.Now().Add(48*time.Hour)
	mk("future", srv(future))
	isCA := tlstest.Server()
	isCA.IsCA = true
	mk("leaf-is-ca", srv(isCA))
	clientPurpose := tlstest.Server()
	clientPurpose.Usage = x509.ExtKeyUsageClientAuth
	mk("client-purpose", srv(clientPurpose)) // not critical: QEMU lets it pass
	wrong := srv(tlstest.Server())
	wrong["ca-cert.pem"] = other.PEM()
	mk("wrong-ca", wrong)
	garbage := srv(tlstest.Server())
	garbage["server-cert.pem"] = []byte("not a certificate\n")
	mk("garbage-cert", garbage)
	garbageCA := srv(tlstest.Server())
	garbageCA["ca-cert.pem"] = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	mk("garbage-ca", garbageCA)
	return d
}

// TestX509LikeQEMU creates tls-creds-x509 objects from the same dirs in
// minivmm's registry and in qemu-img (--object): both accept or both
// refuse, in the same words.
func TestX509LikeQEMU(t *testing.T) {
	needTool(t, "qemu-img")
	d := dirs(t)
	img := filepath.Join(t.TempDir(), "d.raw")
	if err := os.WriteFile(img, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ dir, endpoint, extra string }{
		{"server", "server", ""},
		{"server", "client", ""},
		{"client", "client", ""},
		{"client", "server", ""},
		{"ca-only", "client", ""},
		{"empty", "client", ""},
		{"empty", "server", ""},
		{"expired", "server", ""},
		{"expired", "server", ",sanity-check=off"},
		{"future", "server", ""},
		{"leaf-is-ca", "server", ""},
		{"client-purpose", "server", ""},
		{"wrong-ca", "server", ""},
		{"wrong-ca", "server", ",sanity-check=no"},
		{"garbage-ca", "server", ""},
		{"garbage-cert", "server", ""},
		{"server", "server", ",verify-peer=off,priority=NORMAL"},
		{"server", "server", ",verify-peer=maybe"},
		{"server", "server", ",endpoint=both"},
		{"server", "server", ",loaded=on"},
		{"server", "server", ",bogus=1"},
		{"/nonexistent", "client", ""},
	} {
		dir := tt.dir
		if !strings.HasPrefix(dir, "/") {
			dir = d[dir]
		}
		def := "tls-creds-x509,id=t0,dir=" + dir + ",endpoint=" + tt.endpoint + tt.extra
		out, err := exec.Command("qemu-img", "info", "--object", def, img).CombinedOutput()
		want := ""
		if err != nil {
			want = strings.TrimPrefix(strings.TrimSpace(string(out)), "qemu-img: ")
		}
		got := ""
		m, err := cmdline.ParseKeyval(def, "qom-type")
		if err == nil {
			err = objects.NewRegistry().Add(m, true)
		}
		if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("%s:\n  minivmm:  %q\n  qemu-img: %q", def, got, want)
		}
		t.Logf("%s: %q", tt, got)
	}
}

// TestRegistry: ids, types and properties as object-add takes them (JSON
// values) and their errors; object-del.
func TestRegistry(t *testing.T) {
	d := dirs(t)
	r := objects.NewRegistry()
	for _, tt := range []struct {
		props map[string]any
		err   string
	}{
		{map[string]any{"qom-type": "tls-creds-x509", "id": "s", "dir": d["server"], "endpoint": "server"}, ""},
		{map[string]any{"qom-type": "tls-creds-x509", "id": "s", "dir": d["server"], "endpoint": "server"}, "attempt to add duplicate property 's' to object (type 'container')"},
		{map[string]any{"qom-type": "tls-creds-x509", "id": "c", "dir": d["client"]}, ""},
		{map[string]any{"qom-type": "tls-creds-x509", "id": "x", "dir": d["server"], "verify-peer": "yes"}, "Invalid parameter type for 'verify-peer', expected: boolean"},
		{map[string]any{"qom-type": "tls-creds-x509", "id": "x", "dir": 1}, "Invalid parameter type for 'dir', expected: string"},
		{map[string]any{"qom-type": "tls-creds-x509", "id": "x", "endpoint": "client"}, "Missing 'dir' property value"},
		{map[string]any{"qom-type": "tls-creds-x509", "id": "x", "dir": d["server"], "priority": "NORMAL:%COMPAT"}, "minivmm cannot honour TLS priority 'NORMAL:%COMPAT': Go's TLS takes only [+-]VERS-TLS1.2, [+-]VERS-TLS1.3 and -VERS-ALL after the base, not '%COMPAT'"},
		{map[string]any{"qom-type": "tls-creds-x509", "id": "p", "dir": d["server"], "priority": "NORMAL:-VERS-TLS1.3"}, ""},
		{map[string]any{"qom-type": "tls-creds-x509", "id": "1x", "dir": d["server"]}, "Parameter 'id' expects an identifier"},
		{map[string]any{"qom-type": "tls-creds-x509"}, "Parameter 'id' is missing"},
		{map[string]any{"id": "x"}, "Parameter 'qom-type' is missing"},
		{map[string]any{"qom-type": "nope", "id": "x"}, "Parameter 'qom-type' does not accept value 'nope'"},
		{map[string]any{"qom-type": "tls-creds-psk", "id": "x", "dir": d["server"]}, "minivmm has no 'tls-creds-psk' objects: Go's TLS (crypto/tls) has no pre-shared-key cipher suites; use tls-creds-x509"},
		{map[string]any{"qom-type": "secret", "id": "sec", "data": "x"}, ""},
		{map[string]any{"qom-type": "secret", "id": "sec2"}, "Either 'file' or 'data' must be provided"},
	} {
		err := r.Add(tt.props, false)
		if got := errText(err); got != tt.err {
			t.Errorf("Add(%v): %q, want %q", tt.props, got, tt.err)
		}
	}
	if _, err := r.LookupTLSCreds("s", objects.Server); err != nil {
		t.Error(err)
	}
	for id, want := range map[string]string{
		"c": "Expected TLS credentials for a server endpoint", "sec": "Object with id 'sec' is not TLS credentials",
		"nope": "No TLS credentials with id 'nope'",
	} {
		if _, err := r.LookupTLSCreds(id, objects.Server); errText(err) != want {
			t.Errorf("LookupTLSCreds(%s): %v, want %q", id, err, want)
		}
	}
	if err := r.Del("s"); err != nil {
		t.Error(err)
	}
	if err := r.Del("s"); errText(err) != "object 's' not found" {
		t.Errorf("second Del: %v", err)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// FuzzAdd: any -object argument is taken or refused, never a panic, and
// a refused one adds nothing.
func FuzzAdd(f *testing.F) {
	f.Add("tls-creds-x509,id=t,dir=/nonexistent,endpoint=server")
	f.Add("secret,id=s,data=x,format=base64")
	f.Add("tls-creds-x509,id=t,dir=.,priority=NORMAL:-VERS-ALL:+VERS-TLS1.3,verify-peer=off")
	f.Add("tls-creds-psk,id=p,dir=.")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := cmdline.ParseKeyval(s, "qom-type")
		if err != nil {
			return
		}
		r := objects.NewRegistry()
		err = r.Add(m, true)
		id, _ := m["id"].(string)
		if _, ok := r.Get(id); ok != (err == nil) {
			t.Fatalf("Add(%q): %v, yet the object is there: %v", s, err, ok)
		}
	})
}

// TestAuthorizer: tls-authz's check, made at each client: the object is
// looked up then, and the name compared is written as QEMU 7.2's GnuTLS
// writes it.
func TestAuthorizer(t *testing.T) {
	ca := tlstest.NewCA(t, "CA")
	c := tlstest.Client()
	c.Org, c.Country = "Example Org", "GB"
	certPEM, _, _ := ca.Issue(t, c)
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	r := objects.NewRegistry()
	check := r.Authorizer("az")
	if err := check(cert); errText(err) != "Cannot find QAuthZ object ID az" {
		t.Errorf("before object-add: %v", err)
	}
	if err := r.Add(map[string]any{"qom-type": "authz-simple", "id": "az", "identity": "C=GB,O=Example Org,CN=client"}, false); err != nil {
		t.Fatal(err)
	}
	if err := check(cert); err != nil {
		t.Errorf("allowed identity: %v", err)
	}
	r.Del("az")
	if err := r.Add(map[string]any{"qom-type": "authz-simple", "id": "az", "identity": "CN=client"}, false); err != nil {
		t.Fatal(err)
	}
	if err := check(cert); errText(err) != "TLS x509 authz check for C=GB,O=Example Org,CN=client is denied" {
		t.Errorf("other identity: %v", err)
	}
	if err := r.Add(map[string]any{"qom-type": "secret", "id": "s", "data": "x"}, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Authorizer("s")(cert); errText(err) != "Object 's' is not a QAuthZ subclass" {
		t.Errorf("a secret as authz: %v", err)
	}
}
