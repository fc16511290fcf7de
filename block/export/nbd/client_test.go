package nbd

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/block/export"
	"minivmm/block/nbdproto"
	"minivmm/qemuopen"
)

// testServer is a graph with one node "d" (null-co reads zeroes and has
// no block status; a raw file has data) exported as "disk" on a unix
// socket.
type testServer struct {
	graph *block.Graph
	table *export.Table
	svc   *Service
	sock  string
}

func newTestServer(t *testing.T, writable bool, maxConns uint32) *testServer {
	return newServerTB(t, writable, maxConns)
}

func newFuzzServer(f *testing.F) *testServer { return newServerTB(f, true, 0) }

func newServerTB(t testing.TB, writable bool, maxConns uint32) *testServer {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 1<<20); err != nil {
		t.Fatal(err)
	}
	g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
	if _, err := g.AddRoot(block.Options{"driver": "file", "filename": img, "node-name": "f"}); err != nil {
		t.Fatal(err)
	}
	return finishTestServer(t, g, dir, writable, maxConns)
}

func finishTestServer(t testing.TB, g *block.Graph, dir string, writable bool, maxConns uint32) *testServer {
	t.Helper()
	tab := export.NewTable(g)
	var logf func(string, ...any)
	if tt, ok := t.(*testing.T); ok {
		logf = tt.Logf // a fuzz target must not call F's
	}
	svc := NewService(tab, logf)
	sock := filepath.Join(dir, "nbd.sock")
	if err := svc.Start(ServerOptions{Network: "unix", Address: sock, MaxConnections: maxConns}); err != nil {
		t.Fatal(err)
	}
	if err := tab.Add(ExportOptions{ID: "e", NodeName: "f", Name: "disk", Description: "a disk", Writable: writable, AllocationDepth: true}); err != nil {
		t.Fatal(err)
	}
	ts := &testServer{graph: g, table: tab, svc: svc, sock: sock}
	t.Cleanup(func() {
		tab.CloseAll()
		svc.Close()
		g.Close()
	})
	return ts
}

// client is a minimal NBD client written from the spec, to drive the
// server byte by byte.
type client struct {
	t  testing.TB
	nc net.Conn
}

func dial(t testing.TB, sock string) *client {
	t.Helper()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc}
}

func (c *client) write(p []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(p); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) read(n int) []byte {
	c.t.Helper()
	p := make([]byte, n)
	if _, err := io.ReadFull(c.nc, p); err != nil {
		c.t.Fatalf("reading %d bytes: %v", n, err)
	}
	return p
}

// hello reads the server's greeting and sends the client's flags.
func (c *client) hello(flags uint32) {
	c.t.Helper()
	h := c.read(18)
	if binary.BigEndian.Uint64(h) != nbdproto.Magic || binary.BigEndian.Uint64(h[8:]) != nbdproto.OptMagic {
		c.t.Fatalf("greeting %x", h)
	}
	if f := binary.BigEndian.Uint16(h[16:]); f != nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes {
		c.t.Fatalf("handshake flags %#x", f)
	}
	c.write(binary.BigEndian.AppendUint32(nil, flags))
}

func (c *client) option(opt uint32, data []byte) {
	c.t.Helper()
	p := binary.BigEndian.AppendUint64(nil, nbdproto.OptMagic)
	p = binary.BigEndian.AppendUint32(p, opt)
	p = binary.BigEndian.AppendUint32(p, uint32(len(data)))
	c.write(append(p, data...))
}

// reply reads one option reply: its type and data.
func (c *client) reply(opt uint32) (uint32, []byte) {
	c.t.Helper()
	h := c.read(20)
	if binary.BigEndian.Uint64(h) != nbdproto.OptReplyMagic || binary.BigEndian.Uint32(h[8:]) != opt {
		c.t.Fatalf("option reply %x to option %d", h, opt)
	}
	return binary.BigEndian.Uint32(h[12:]), c.read(int(binary.BigEndian.Uint32(h[16:])))
}

func str32(s string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...)
}

// metaData is the data of a meta context option.
func metaData(export string, queries ...string) []byte {
	p := str32(export)
	p = binary.BigEndian.AppendUint32(p, uint32(len(queries)))
	for _, q := range queries {
		p = append(p, str32(q)...)
	}
	return p
}

// open negotiates structured replies and base:allocation and
// qemu:allocation-depth, then goes into transmission on "disk"; it
// returns the export's size and flags.
func (c *client) open() (uint64, uint16) {
	c.t.Helper()
	c.hello(nbdproto.FlagFixedNewstyle | nbdproto.FlagNoZeroes)
	c.option(nbdproto.OptStructuredReply, nil)
	if typ, _ := c.reply(nbdproto.OptStructuredReply); typ != nbdproto.RepAck {
		c.t.Fatalf("structured reply: %#x", typ)
	}
	c.option(nbdproto.OptSetMetaContext, metaData("disk", nbdproto.CtxBaseAllocation, nbdproto.CtxAllocationDepth))
	for {
		typ, _ := c.reply(nbdproto.OptSetMetaContext)
		if typ == nbdproto.RepAck {
			break
		}
		if typ != nbdproto.RepMetaContext {
			c.t.Fatalf("set meta context: %#x", typ)
		}
	}
	c.option(nbdproto.OptGo, append(str32("disk"), 0, 0))
	var size uint64
	var flags uint16
	for {
		typ, data := c.reply(nbdproto.OptGo)
		if typ == nbdproto.RepAck {
			return size, flags
		}
		if typ != nbdproto.RepInfo {
			c.t.Fatalf("go: %#x %q", typ, data)
		}
		if binary.BigEndian.Uint16(data) == nbdproto.InfoExport {
			size, flags = binary.BigEndian.Uint64(data[2:]), binary.BigEndian.Uint16(data[10:])
		}
	}
}

func (c *client) request(typ, flags uint16, handle, off uint64, length uint32, payload []byte) {
	c.t.Helper()
	p := binary.BigEndian.AppendUint32(nil, nbdproto.RequestMagic)
	p = binary.BigEndian.AppendUint16(p, flags)
	p = binary.BigEndian.AppendUint16(p, typ)
	p = binary.BigEndian.AppendUint64(p, handle)
	p = binary.BigEndian.AppendUint64(p, off)
	p = binary.BigEndian.AppendUint32(p, length)
	c.write(append(p, payload...))
}

// chunk is one reply to a request, simple or a structured chunk.
type chunk struct {
	simple     bool
	flags, typ uint16
	handle     uint64
	errno      uint32 // simple replies'
	data       []byte // structured chunks'
}

func (c *client) chunk() chunk {
	c.t.Helper()
	h := c.read(4)
	switch binary.BigEndian.Uint32(h) {
	case nbdproto.SimpleReplyMagic:
		r := c.read(12)
		return chunk{simple: true, errno: binary.BigEndian.Uint32(r), handle: binary.BigEndian.Uint64(r[4:])}
	case nbdproto.StructuredReplyMagic:
		r := c.read(16)
		ch := chunk{flags: binary.BigEndian.Uint16(r), typ: binary.BigEndian.Uint16(r[2:]), handle: binary.BigEndian.Uint64(r[4:])}
		ch.data = c.read(int(binary.BigEndian.Uint32(r[12:])))
		return ch
	}
	c.t.Fatalf("reply magic %x", h)
	return chunk{}
}

// closed tells whether the server closed the connection (without
// sending anything more).
func (c *client) closed() bool {
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.nc.Read(make([]byte, 1))
	return n == 0 && err != nil
}

// settle waits for the goroutines started since the count was taken to
// end.
func settle(t *testing.T, goroutines int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines left, %d before:\n%s", n, goroutines, buf[:runtime.Stack(buf, true)])
	}
}
