package nbdclient_test

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"minivmm/block"
	"minivmm/block/export"
	"minivmm/block/export/nbd"
	"minivmm/block/objects"
	"minivmm/internal/fdtest"
	"minivmm/internal/tlstest"
	"minivmm/qemuopen"
)

// serveTLS exports a 1 MiB raw file as "disk" over TLS on 127.0.0.1, in
// process; it returns the port and the client credentials' registry
// (id "c").
func serveTLS(t *testing.T) (port string, objs *objects.Registry, restart func()) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := tlstest.NewCA(t, "CA")
	objs = objects.NewRegistry()
	for id, p := range map[string]map[string]any{
		"s": {"dir": ca.ServerDir(t, filepath.Join(dir, "srv"), tlstest.Server()), "endpoint": "server"},
		"c": {"dir": ca.ClientDir(t, filepath.Join(dir, "cli"), tlstest.Client()), "endpoint": "client"},
	} {
		p["qom-type"], p["id"] = "tls-creds-x509", id
		if err := objs.Add(p, false); err != nil {
			t.Fatal(err)
		}
	}
	creds, _ := objs.LookupTLSCreds("s", objects.Server)
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	if _, err := g.AddRoot(block.Options{"driver": "file", "filename": img, "node-name": "f"}); err != nil {
		t.Fatal(err)
	}
	tab := export.NewTable(g)
	svc := nbd.NewService(tab, t.Logf)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start := func() {
		if err := svc.Start(nbd.ServerOptions{Network: "tcp", Address: addr, TLS: creds}); err != nil {
			t.Fatal(err)
		}
		if err := tab.Add(nbd.ExportOptions{ID: "e", NodeName: "f", Name: "disk", Writable: true}); err != nil {
			t.Fatal(err)
		}
	}
	start()
	t.Cleanup(func() { tab.CloseAll(); svc.Close(); g.Close(); reg.CloseAll() })
	_, port, _ = net.SplitHostPort(addr)
	return port, objs, func() { svc.Stop(); start() }
}

// TestClientTLS: the driver over TLS to minivmm's server on inet, the
// hostname checked being the server's host (127.0.0.1, in the
// certificate) as QEMU's; a reconnection starts TLS again; a wrong
// tls-hostname and a unix socket without one are refused in QEMU's words.
func TestClientTLS(t *testing.T) {
	fdtest.Check(t)
	port, objs, restart := serveTLS(t)
	g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
	g.SetObjects(objs)
	defer g.Close()
	srv := block.Options{"type": "inet", "host": "127.0.0.1", "port": port}
	n, err := g.AddRoot(block.Options{"driver": "nbd", "node-name": "n", "reconnect-delay": int64(5), "server": srv, "export": "disk", "tls-creds": "c"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Attach("", n, block.Perm{Write: true}); err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte{0x42}, 64<<10)
	if _, err := n.WriteAt(p, 4096); err != nil {
		t.Fatal(err)
	}
	restart()
	q := make([]byte, len(p))
	if _, err := n.ReadAt(q, 4096); err != nil || !bytes.Equal(p, q) {
		t.Fatalf("read over a new TLS connection: %v", err)
	}
	for _, tt := range []struct {
		opts block.Options
		err  string
	}{
		{block.Options{"server": srv, "tls-hostname": "elsewhere"}, "Certificate does not match the hostname elsewhere"},
		{block.Options{"server": block.Options{"type": "unix", "path": "/nonexistent"}}, "Failed to connect to '/nonexistent'"},
		{block.Options{"server": srv, "tls-creds": "nope"}, "No TLS credentials with id 'nope'"},
	} {
		o := block.Options{"driver": "nbd", "node-name": "bad", "export": "disk", "tls-creds": "c"}
		for k, v := range tt.opts {
			o[k] = v
		}
		if _, err := g.AddRoot(o); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%v: %v, want %q", tt.opts, err, tt.err)
		}
	}
}
