package nbdclient_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/block/export"
	"minivmm/block/export/nbd"
	"minivmm/block/nbdclient"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// serve exports a 1 MiB raw file as "disk" on a unix socket, in process.
func serve(t *testing.T) (sock string, svc *nbd.Service, tab *export.Table) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 1<<20); err != nil {
		t.Fatal(err)
	}
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	if _, err := g.AddRoot(block.Options{"driver": "file", "filename": img, "node-name": "f"}); err != nil {
		t.Fatal(err)
	}
	tab = export.NewTable(g)
	svc = nbd.NewService(tab, t.Logf)
	sock = filepath.Join(dir, "s")
	if err := svc.Start(nbd.ServerOptions{Network: "unix", Address: sock}); err != nil {
		t.Fatal(err)
	}
	if err := tab.Add(nbd.ExportOptions{ID: "e", NodeName: "f", Name: "disk", Writable: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tab.CloseAll(); svc.Close(); g.Close(); reg.CloseAll() })
	return sock, svc, tab
}

// TestClientServer: the driver against minivmm's own server, in one
// process under the race detector: concurrent reads and writes, zeroes
// and block status through, and reconnection within reconnect-delay.
func TestClientServer(t *testing.T) {
	fdtest.Check(t)
	sock, svc, tab := serve(t)
	g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
	defer g.Close()
	n, err := g.AddRoot(block.Options{"driver": "nbd", "node-name": "n", "reconnect-delay": int64(5),
		"server": block.Options{"type": "unix", "path": sock}, "export": "disk"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Attach("", n, block.Perm{Write: true}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func() {
			p := bytes.Repeat([]byte{byte(i + 1)}, 4096)
			for j := 0; j < 16; j++ {
				off := int64(i*16+j) * 4096
				if _, err := n.WriteAt(p, off); err != nil {
					done <- err
					return
				}
				q := make([]byte, 4096)
				if _, err := n.ReadAt(q, off); err != nil || !bytes.Equal(p, q) {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for i := 0; i < 8; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := n.WriteZeroes(0, 65536, true); err != nil {
		t.Fatal(err)
	}
	st, l, err := n.BlockStatus(0, 1<<20)
	if err != nil || !st.Zero || l < 65536 {
		t.Errorf("block status after zeroing: %+v %d %v", st, l, err)
	}
	// The server goes away and comes back: a request waits for it.
	if err := svc.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(nbd.ServerOptions{Network: "unix", Address: sock}); err != nil {
		t.Fatal(err)
	}
	if err := tab.Add(nbd.ExportOptions{ID: "e", NodeName: "f", Name: "disk", Writable: true}); err != nil {
		t.Fatal(err)
	}
	q := make([]byte, 4096)
	if _, err := n.ReadAt(q, 65536); err != nil || q[0] != 2 { // writer 1's first block
		t.Errorf("read after the server came back: %v %d", err, q[0])
	}
	if err := n.Flush(); err != nil {
		t.Error(err)
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"nbd://h:10809/x", "nbd+unix:///e?socket=/s", "nbd+tcp://[::1]/", "nbd://h/?a=b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		srv, export, err := nbdclient.ParseURL(s)
		if err != nil {
			return
		}
		// What parses names a server, and prints back to the same.
		if srv.Type == "unix" && srv.Path == "" || srv.Type == "inet" && srv.Host == "" {
			t.Fatalf("ParseURL(%q) = %+v", s, srv)
		}
		srv2, export2, err := nbdclient.ParseURL(srv.URL(export))
		if err != nil || srv2 != srv || export2 != export {
			t.Errorf("ParseURL(%q) = %+v %q; its URL %q parses to %+v %q %v", s, srv, export, srv.URL(export), srv2, export2, err)
		}
	})
}
