package nbd

import (
	"crypto/tls"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/block/nbdproto"
	"minivmm/block/objects"
	"minivmm/internal/fdtest"
	"minivmm/internal/tlstest"
	"minivmm/qemuopen"
)

// tlsFixture is a TLS-only server of "disk" and the client credentials
// that go with it: good ones, and ones the server must refuse.
type tlsFixture struct {
	ts      *testServer
	clients map[string]*objects.TLSCreds
}

func newTLSServer(t testing.TB) *tlsFixture {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, other := tlstest.NewCA(t, "CA"), tlstest.NewCA(t, "Other")
	objs := objects.NewRegistry()
	add := func(id, d, endpoint string) {
		t.Helper()
		// sanity-check off: wrongca's own certificate would not pass it.
		if err := objs.Add(map[string]any{"qom-type": "tls-creds-x509", "id": id, "dir": d, "endpoint": endpoint, "sanity-check": false}, false); err != nil {
			t.Fatal(err)
		}
	}
	// A client the CA revoked: the server's dir has a CRL naming it.
	rcert, rkey, serial := ca.Issue(t, tlstest.Client())
	srvDir := ca.ServerDir(t, filepath.Join(dir, "srv"), tlstest.Server())
	tlstest.WriteDir(t, srvDir, map[string][]byte{"ca-crl.pem": ca.CRL(t, serial)})
	add("srv", srvDir, "server")
	add("revoked", tlstest.WriteDir(t, filepath.Join(dir, "revoked"), map[string][]byte{"ca-cert.pem": ca.PEM(), "client-cert.pem": rcert, "client-key.pem": rkey}), "client")
	add("good", ca.ClientDir(t, filepath.Join(dir, "good"), tlstest.Client()), "client")
	add("nocert", tlstest.WriteDir(t, filepath.Join(dir, "nocert"), map[string][]byte{"ca-cert.pem": ca.PEM()}), "client")
	// A client whose certificate another CA signed (it trusts ours).
	cert, key, _ := other.Issue(t, tlstest.Client())
	add("wrongca", tlstest.WriteDir(t, filepath.Join(dir, "wrongca"), map[string][]byte{"ca-cert.pem": ca.PEM(), "client-cert.pem": cert, "client-key.pem": key}), "client")
	old := tlstest.Client()
	old.NotBefore, old.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	add("expired", ca.ClientDir(t, filepath.Join(dir, "expired"), old), "client")
	g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
	if _, err := g.AddRoot(block.Options{"driver": "file", "filename": img, "node-name": "f"}); err != nil {
		t.Fatal(err)
	}
	creds, err := objs.LookupTLSCreds("srv", objects.Server)
	if err != nil {
		t.Fatal(err)
	}
	f := &tlsFixture{ts: finishTestServer(t, g, dir, true, 0), clients: map[string]*objects.TLSCreds{}}
	// Restart the server with TLS; the export goes with the old one.
	f.ts.svc.Stop()
	if err := f.ts.svc.Start(ServerOptions{Network: "unix", Address: f.ts.sock, TLS: creds}); err != nil {
		t.Fatal(err)
	}
	if err := f.ts.table.Add(ExportOptions{ID: "e", NodeName: "f", Name: "disk", Writable: true}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"good", "nocert", "wrongca", "expired", "revoked"} {
		f.clients[id], _ = objs.LookupTLSCreds(id, objects.Client)
	}
	return f
}

// startTLS sends NBD_OPT_STARTTLS and runs the TLS handshake with creds,
// checking the hostname localhost.
func (c *client) startTLS(creds *objects.TLSCreds) error {
	c.t.Helper()
	c.option(nbdproto.OptStartTLS, nil)
	if typ, msg := c.reply(nbdproto.OptStartTLS); typ != nbdproto.RepAck {
		c.t.Fatalf("STARTTLS: reply %#x %q", typ, msg)
	}
	tc := tls.Client(c.nc, creds.ClientConfig("localhost"))
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.nc = tc
	return nil
}

// TestStartTLS: with tls-creds, the server refuses every option before
// STARTTLS as QEMU does (NBD_REP_ERR_TLS_REQD, the client may go on;
// NBD_OPT_EXPORT_NAME closes), then negotiates and serves over TLS.
func TestStartTLS(t *testing.T) {
	fdtest.Check(t)
	f := newTLSServer(t)
	c := dial(t, f.ts.sock)
	c.hello(nbdproto.FlagFixedNewstyle | nbdproto.FlagNoZeroes)
	for _, opt := range []uint32{nbdproto.OptList, nbdproto.OptStructuredReply, nbdproto.OptGo, 99} {
		c.option(opt, []byte("junk"))
		typ, msg := c.reply(opt)
		if want := "Option 0x" + map[uint32]string{3: "3", 8: "8", 7: "7", 99: "63"}[opt] + " not permitted before TLS"; typ != nbdproto.RepErrTLSReqd || string(msg) != want {
			t.Errorf("option %d before TLS: %#x %q, want %q", opt, typ, msg, want)
		}
	}
	if err := c.startTLS(f.clients["good"]); err != nil {
		t.Fatal(err)
	}
	c.option(nbdproto.OptStartTLS, nil)
	if typ, msg := c.reply(nbdproto.OptStartTLS); typ != nbdproto.RepErrInvalid || string(msg) != "TLS already enabled" {
		t.Errorf("second STARTTLS: %#x %q", typ, msg)
	}
	c.option(nbdproto.OptList, nil)
	if typ, data := c.reply(nbdproto.OptList); typ != nbdproto.RepServer || string(data[4:]) != "disk" {
		t.Errorf("list over TLS: %#x %q", typ, data)
	}
	c.reply(nbdproto.OptList) // the ACK
	c.option(nbdproto.OptStructuredReply, nil)
	if typ, _ := c.reply(nbdproto.OptStructuredReply); typ != nbdproto.RepAck {
		t.Fatalf("structured reply over TLS: %#x", typ)
	}
	c.option(nbdproto.OptGo, append(str32("disk"), 0, 0))
	for {
		typ, data := c.reply(nbdproto.OptGo)
		if typ == nbdproto.RepAck {
			break
		}
		if typ != nbdproto.RepInfo {
			t.Fatalf("go over TLS: %#x %q", typ, data)
		}
	}
	c.request(nbdproto.CmdWrite, 0, 1, 0, 4, []byte{1, 2, 3, 4})
	if r := c.chunk(); !r.simple || r.errno != 0 {
		t.Fatalf("write over TLS: %+v", r)
	}
	c.request(nbdproto.CmdRead, nbdproto.CmdFlagDF, 2, 0, 4, nil)
	if r := c.chunk(); r.typ != nbdproto.ChunkOffsetData || string(r.data[8:]) != "\x01\x02\x03\x04" {
		t.Fatalf("read over TLS: %+v", r)
	}
	c.request(nbdproto.CmdDisc, 0, 3, 0, 0, nil)
	if !c.closed() {
		t.Error("still open after NBD_CMD_DISC")
	}

	// NBD_OPT_EXPORT_NAME cannot be refused: the server hangs up.
	c = dial(t, f.ts.sock)
	c.hello(nbdproto.FlagFixedNewstyle)
	c.option(nbdproto.OptExportName, []byte("disk"))
	if !c.closed() {
		t.Error("EXPORT_NAME before TLS: still open")
	}
	// A STARTTLS with data: an error, then the server hangs up.
	c = dial(t, f.ts.sock)
	c.hello(nbdproto.FlagFixedNewstyle)
	c.option(nbdproto.OptStartTLS, []byte("x"))
	if typ, msg := c.reply(nbdproto.OptStartTLS); typ != nbdproto.RepErrInvalid || string(msg) != "option 'starttls' has unexpected length" {
		t.Errorf("STARTTLS with data: %#x %q", typ, msg)
	}
	if !c.closed() {
		t.Error("STARTTLS with data: still open")
	}
	// NBD_OPT_ABORT before TLS: the refusal is the reply, then goodbye.
	c = dial(t, f.ts.sock)
	c.hello(nbdproto.FlagFixedNewstyle)
	c.option(nbdproto.OptAbort, nil)
	if typ, _ := c.reply(nbdproto.OptAbort); typ != nbdproto.RepErrTLSReqd {
		t.Errorf("ABORT before TLS: %#x", typ)
	}
	if !c.closed() {
		t.Error("ABORT before TLS: still open")
	}
}

// TestStartTLSRefusesPeers: with verify-peer (the default), a client
// without a certificate, or with one the CA did not sign, is dropped
// once the handshake is done, and so is one whose certificate has
// expired or is in the CA's revocation list, with nothing left open.
func TestStartTLSRefusesPeers(t *testing.T) {
	fdtest.Check(t)
	f := newTLSServer(t)
	for _, id := range []string{"nocert", "wrongca", "expired", "revoked"} {
		c := dial(t, f.ts.sock)
		c.hello(nbdproto.FlagFixedNewstyle | nbdproto.FlagNoZeroes)
		if err := c.startTLS(f.clients[id]); err == nil {
			// TLS 1.3: the client's handshake is done before the server
			// has looked at its certificate; the refusal comes next.
			p := binary.BigEndian.AppendUint64(nil, nbdproto.OptMagic)
			p = binary.BigEndian.AppendUint32(p, nbdproto.OptList)
			c.nc.Write(binary.BigEndian.AppendUint32(p, 0)) // may fail: the server may have hung up
			c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.nc.Read(make([]byte, 20)); err == nil {
				t.Errorf("%s: the server answered", id)
			}
		}
		c.nc.Close()
	}
}

// FuzzHandshakeTLS: any bytes to a server that requires TLS end in a
// reply or a closed connection, never a panic or a hang.
func FuzzHandshakeTLS(f *testing.F) {
	start := binary.BigEndian.AppendUint32(nil, nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes)
	opt := func(p []byte, o uint32, data []byte) []byte {
		p = binary.BigEndian.AppendUint64(p, nbdproto.OptMagic)
		p = binary.BigEndian.AppendUint32(p, o)
		p = binary.BigEndian.AppendUint32(p, uint32(len(data)))
		return append(p, data...)
	}
	f.Add(opt(opt(start, nbdproto.OptList, nil), nbdproto.OptStartTLS, nil))
	f.Add(opt(start, nbdproto.OptStartTLS, []byte{1}))
	// STARTTLS, then the start of a TLS record.
	f.Add(append(opt(start, nbdproto.OptStartTLS, nil), 0x16, 3, 1, 0, 4, 1, 0, 0, 0))
	f.Add(opt(start, nbdproto.OptExportName, []byte("disk")))
	fx := newTLSServer(f)
	conf := fx.ts.svc.srv.tlsConf
	f.Fuzz(func(t *testing.T, in []byte) { feedTLS(t, fx.ts.svc, conf, in) })
}
