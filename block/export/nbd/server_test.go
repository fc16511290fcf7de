package nbd

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"sync"
	"testing"

	"minivmm/block/nbdproto"
	"minivmm/internal/fdtest"
)

// TestTransmission drives every command through a client written from
// the spec: data, holes, block status, errors with their errnos.
func TestTransmission(t *testing.T) {
	fdtest.Check(t)
	ts := newTestServer(t, true, 0)
	c := dial(t, ts.sock)
	size, flags := c.open()
	if size != 1<<20 {
		t.Fatalf("size %d", size)
	}
	want := uint16(nbdproto.FlagHasFlags | nbdproto.FlagSendFlush | nbdproto.FlagSendFUA | nbdproto.FlagSendTrim | nbdproto.FlagSendWriteZeroes | nbdproto.FlagSendFastZero | nbdproto.FlagSendCache | nbdproto.FlagSendDF | nbdproto.FlagCanMultiConn)
	if flags != want {
		t.Errorf("transmission flags %#x, want %#x", flags, want)
	}
	data := bytes.Repeat([]byte{0xab}, 8192)
	c.request(nbdproto.CmdWrite, nbdproto.CmdFlagFUA, 1, 4096, 8192, data)
	if r := c.chunk(); !r.simple || r.errno != 0 || r.handle != 1 {
		t.Fatalf("write: %+v", r)
	}
	// A read over data and a hole: a data chunk, then a hole chunk, the
	// last one done.
	c.request(nbdproto.CmdRead, 0, 2, 4096, 8192+sparseReadMin, nil)
	r := c.chunk()
	if r.typ != nbdproto.ChunkOffsetData || binary.BigEndian.Uint64(r.data) != 4096 || !bytes.Equal(r.data[8:], data) || r.flags&nbdproto.ReplyFlagDone != 0 {
		t.Fatalf("read's first chunk: typ %d flags %d len %d", r.typ, r.flags, len(r.data))
	}
	r = c.chunk()
	if r.typ != nbdproto.ChunkOffsetHole || binary.BigEndian.Uint64(r.data) != 12288 || binary.BigEndian.Uint32(r.data[8:]) != sparseReadMin || r.flags&nbdproto.ReplyFlagDone == 0 {
		t.Fatalf("read's second chunk: %+v", r)
	}
	// With DF, one data chunk whatever the data.
	c.request(nbdproto.CmdRead, nbdproto.CmdFlagDF, 3, 0, 8192, nil)
	r = c.chunk()
	if r.typ != nbdproto.ChunkOffsetData || len(r.data) != 8+8192 || r.flags&nbdproto.ReplyFlagDone == 0 || !bytes.Equal(r.data[8+4096:], data[:4096]) {
		t.Fatalf("read with DF: typ %d flags %d len %d", r.typ, r.flags, len(r.data))
	}
	// Block status: one chunk per context, the last done.
	c.request(nbdproto.CmdBlockStatus, 0, 4, 0, 1<<20, nil)
	seen := map[uint32][]uint32{}
	for {
		r = c.chunk()
		if r.typ != nbdproto.ChunkBlockStatus {
			t.Fatalf("block status: %+v", r)
		}
		id := binary.BigEndian.Uint32(r.data)
		for p := r.data[4:]; len(p) >= 8; p = p[8:] {
			seen[id] = append(seen[id], binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:]))
		}
		if r.flags&nbdproto.ReplyFlagDone != 0 {
			break
		}
	}
	var total uint32
	for i := 0; i < len(seen[metaBaseAllocation]); i += 2 {
		total += seen[metaBaseAllocation][i]
	}
	if total != 1<<20 || len(seen[metaAllocationDepth]) == 0 {
		t.Errorf("block status extents: %v", seen)
	}
	// Errors: each request answered, the connection going on.
	for _, tt := range []struct {
		name       string
		typ, flags uint16
		off        uint64
		length     uint32
		payload    []byte
		errno      uint32
	}{
		{"read past EOF", nbdproto.CmdRead, 0, 1 << 20, 1, nil, nbdproto.ErrInval},
		{"read too long", nbdproto.CmdRead, 0, 0, nbdproto.MaxPayload + 1, nil, nbdproto.ErrInval},
		{"write past EOF", nbdproto.CmdWrite, 0, 1<<20 - 1, 2, []byte{1, 2}, nbdproto.ErrNoSpc},
		{"zeroes past EOF", nbdproto.CmdWriteZeroes, 0, 1 << 20, 1, nil, nbdproto.ErrNoSpc},
		{"trim past EOF", nbdproto.CmdTrim, 0, 1<<64 - 1, 2, nil, nbdproto.ErrInval},
		{"unknown command", 99, 0, 0, 0, nil, nbdproto.ErrInval},
		{"unknown flag", nbdproto.CmdFlush, 1 << 9, 0, 0, nil, nbdproto.ErrInval},
		{"status of nothing", nbdproto.CmdBlockStatus, 0, 0, 0, nil, nbdproto.ErrInval},
	} {
		c.request(tt.typ, tt.flags, 100, tt.off, tt.length, tt.payload)
		r := c.chunk()
		errno := r.errno
		if !r.simple {
			if r.typ != nbdproto.ChunkError || r.flags&nbdproto.ReplyFlagDone == 0 {
				t.Errorf("%s: chunk %+v", tt.name, r)
				continue
			}
			errno = binary.BigEndian.Uint32(r.data)
		}
		if errno != tt.errno || r.handle != 100 {
			t.Errorf("%s: errno %d handle %d, want %d", tt.name, errno, r.handle, tt.errno)
		}
	}
	// Zeroes (fast: the file node fallocates), trim, flush, cache: done, and the data reads as zeroes.
	for i, rq := range []struct {
		typ, flags uint16
	}{{nbdproto.CmdWriteZeroes, nbdproto.CmdFlagFastZero | nbdproto.CmdFlagNoHole}, {nbdproto.CmdWriteZeroes, nbdproto.CmdFlagNoHole}, {nbdproto.CmdTrim, nbdproto.CmdFlagFUA}, {nbdproto.CmdFlush, 0}, {nbdproto.CmdCache, 0}} {
		c.request(rq.typ, rq.flags, uint64(10+i), 4096, 4096, nil)
		if r := c.chunk(); !r.simple || r.errno != 0 {
			t.Errorf("command %d: %+v", rq.typ, r)
		}
	}
	c.request(nbdproto.CmdRead, nbdproto.CmdFlagDF, 20, 4096, 4096, nil)
	if r := c.chunk(); r.typ != nbdproto.ChunkOffsetData || !bytes.Equal(r.data[8:], make([]byte, 4096)) {
		t.Errorf("read after zeroing: %+v", r.typ)
	}
	c.request(nbdproto.CmdDisc, 0, 21, 0, 0, nil)
	if !c.closed() {
		t.Error("NBD_CMD_DISC left the connection open")
	}
}

// TestManyInFlight: a client that sends many requests before reading any
// reply gets every reply, each matching its handle.
func TestManyInFlight(t *testing.T) {
	fdtest.Check(t)
	ts := newTestServer(t, true, 0)
	c := dial(t, ts.sock)
	c.open()
	const n = 500
	go func() {
		for i := 0; i < n; i++ {
			p := bytes.Repeat([]byte{byte(i)}, 512)
			c.request(nbdproto.CmdWrite, 0, uint64(i), uint64(i)*512, 512, p)
		}
	}()
	got := map[uint64]bool{}
	for i := 0; i < n; i++ {
		r := c.chunk()
		if r.errno != 0 || got[r.handle] {
			t.Fatalf("reply %+v", r)
		}
		got[r.handle] = true
	}
	for i := 0; i < n; i += 97 {
		c.request(nbdproto.CmdRead, nbdproto.CmdFlagDF, uint64(i), uint64(i)*512, 512, nil)
		if r := c.chunk(); !bytes.Equal(r.data[8:], bytes.Repeat([]byte{byte(i)}, 512)) {
			t.Errorf("sector %d: %x", i, r.data[8:16])
		}
	}
}

// TestHandshake: the options QEMU answers, answered the same way.
func TestHandshake(t *testing.T) {
	fdtest.Check(t)
	ts := newTestServer(t, false, 1)
	c := dial(t, ts.sock)
	c.hello(nbdproto.FlagFixedNewstyle)
	c.option(nbdproto.OptList, nil)
	typ, data := c.reply(nbdproto.OptList)
	if typ != nbdproto.RepServer || !bytes.Equal(data, append(str32("disk"), "a disk"...)) {
		t.Errorf("list: %#x %q", typ, data)
	}
	if typ, _ = c.reply(nbdproto.OptList); typ != nbdproto.RepAck {
		t.Errorf("list's end: %#x", typ)
	}
	for _, tt := range []struct {
		opt  uint32
		data []byte
		want uint32
	}{
		{nbdproto.OptList, []byte{1}, nbdproto.RepErrInvalid},
		{nbdproto.OptStartTLS, nil, nbdproto.RepErrPolicy},
		{99, []byte("x"), nbdproto.RepErrUnsup},
		{nbdproto.OptInfo, append(str32("nope"), 0, 0), nbdproto.RepErrUnknown},
		{nbdproto.OptInfo, str32("disk"), nbdproto.RepErrInvalid},
		{nbdproto.OptInfo, append(str32("disk"), 0, 1), nbdproto.RepErrInvalid},
		{nbdproto.OptSetMetaContext, metaData("disk", nbdproto.CtxBaseAllocation), nbdproto.RepErrInvalid},
		{nbdproto.OptListMetaContext, metaData("nope"), nbdproto.RepErrUnknown},
		{nbdproto.OptListMetaContext, []byte{0, 0, 0, 9, 'd'}, nbdproto.RepErrInvalid},
		{nbdproto.OptGo, make([]byte, maxOption+1), nbdproto.RepErrTooBig},
	} {
		c.option(tt.opt, tt.data)
		if typ, msg := c.reply(tt.opt); typ != tt.want {
			t.Errorf("option %d %q: reply %#x %q, want %#x", tt.opt, tt.data, typ, msg, tt.want)
		}
	}
	// Listing contexts: all, then by namespace.
	c.option(nbdproto.OptListMetaContext, metaData("disk"))
	var names []string
	for {
		typ, data := c.reply(nbdproto.OptListMetaContext)
		if typ == nbdproto.RepAck {
			break
		}
		names = append(names, string(data[4:]))
	}
	if len(names) != 2 || names[0] != nbdproto.CtxBaseAllocation || names[1] != nbdproto.CtxAllocationDepth {
		t.Errorf("contexts %q", names)
	}
	c.option(nbdproto.OptInfo, append(str32("disk"), 0, 2, 0, nbdproto.InfoName, 0, nbdproto.InfoDescription))
	var infos []uint16
	var flags uint16
	for {
		typ, data := c.reply(nbdproto.OptInfo)
		if typ == nbdproto.RepAck {
			break
		}
		infos = append(infos, binary.BigEndian.Uint16(data))
		if binary.BigEndian.Uint16(data) == nbdproto.InfoExport {
			flags = binary.BigEndian.Uint16(data[10:])
		}
	}
	if len(infos) != 4 {
		t.Errorf("infos %v", infos)
	}
	// Read-only, and max-connections=1: no multi-conn.
	if flags&nbdproto.FlagReadOnly == 0 || flags&nbdproto.FlagCanMultiConn != 0 {
		t.Errorf("flags %#x", flags)
	}
	c.option(nbdproto.OptAbort, nil)
	if typ, _ := c.reply(nbdproto.OptAbort); typ != nbdproto.RepAck || !c.closed() {
		t.Error("abort")
	}
	// The old way in, with zeroes.
	c = dial(t, ts.sock)
	c.hello(nbdproto.FlagFixedNewstyle)
	c.option(nbdproto.OptExportName, []byte("disk"))
	if p := c.read(8 + 2 + 124); binary.BigEndian.Uint64(p) != 1<<20 {
		t.Errorf("export name reply %x", p[:10])
	}
	c.request(nbdproto.CmdWrite, 0, 1, 0, 1, []byte{1})
	if r := c.chunk(); r.errno != nbdproto.ErrPerm {
		t.Errorf("write to a read-only export: %+v", r)
	}
}

// TestBadClients: clients that break the protocol or vanish are
// disconnected; the export and other clients go on, and nothing is left
// behind.
func TestBadClients(t *testing.T) {
	fdtest.Check(t)
	ts := newTestServer(t, true, 0)
	good := dial(t, ts.sock)
	good.open()
	goodRead := func(after string) {
		t.Helper()
		good.request(nbdproto.CmdRead, nbdproto.CmdFlagDF, 7, 0, 512, nil)
		if r := good.chunk(); r.handle != 7 || r.typ != nbdproto.ChunkOffsetData {
			t.Fatalf("after %s: the good client got %+v", after, r)
		}
	}
	goodRead("open")
	for _, tt := range []struct {
		name string
		send func(c *client)
	}{
		{"vanish at once", func(c *client) {}},
		{"vanish after greeting", func(c *client) { c.read(18) }},
		{"unknown client flags", func(c *client) { c.hello(1 << 5) }},
		{"bad option magic", func(c *client) { c.hello(nbdproto.FlagFixedNewstyle); c.write(make([]byte, 16)) }},
		{"huge option", func(c *client) {
			c.hello(nbdproto.FlagFixedNewstyle)
			c.write(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, nbdproto.OptMagic), nbdproto.OptGo), nbdproto.MaxPayload+1))
		}},
		{"half an option", func(c *client) {
			c.hello(nbdproto.FlagFixedNewstyle)
			c.write(binary.BigEndian.AppendUint64(nil, nbdproto.OptMagic))
		}},
		{"option data cut short", func(c *client) {
			c.hello(nbdproto.FlagFixedNewstyle)
			c.option(nbdproto.OptGo, nil)
			c.nc.Write([]byte{0, 0, 1, 0})
		}},
		{"unknown export name", func(c *client) { c.hello(nbdproto.FlagFixedNewstyle); c.option(nbdproto.OptExportName, []byte("nope")) }},
		{"bad request magic", func(c *client) { c.open(); c.write(make([]byte, 28)) }},
		{"write too long", func(c *client) { c.open(); c.request(nbdproto.CmdWrite, 0, 1, 0, nbdproto.MaxPayload+1, nil) }},
		{"vanish mid-payload", func(c *client) { c.open(); c.request(nbdproto.CmdWrite, 0, 1, 0, 65536, make([]byte, 100)) }},
		{"vanish with requests in flight", func(c *client) {
			c.open()
			for i := 0; i < 64; i++ {
				c.request(nbdproto.CmdRead, 0, uint64(i), 0, 65536, nil)
			}
		}},
	} {
		// Counted anew each time: the good client's connection keeps
		// the workers it has started (one may have been added).
		base := runtime.NumGoroutine()
		c := dial(t, ts.sock)
		tt.send(c)
		c.nc.Close()
		settle(t, base)
		goodRead(tt.name)
	}
	// The server closes on its own where the client broke the protocol.
	c := dial(t, ts.sock)
	c.open()
	c.write(make([]byte, 28))
	if !c.closed() {
		t.Error("a bad request magic left the connection open")
	}
}

// TestManyConnections: 1000 clients at once, each served; and an export
// removed under them disconnects them all.
func TestManyConnections(t *testing.T) {
	fdtest.Check(t)
	ts := newTestServer(t, true, 0)
	base := runtime.NumGoroutine()
	const n = 1000
	clients := make([]*client, n)
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range clients {
		clients[i] = dial(t, ts.sock)
	}
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.open()
			c.request(nbdproto.CmdWrite, 0, uint64(i), uint64(i)*512, 512, bytes.Repeat([]byte{byte(i)}, 512))
			if r := c.chunk(); r.errno != 0 {
				errs <- "write failed"
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if err := ts.table.Delete("e", false); err == nil {
		t.Fatal("a safe removal of an export in use succeeded")
	}
	if err := ts.table.Delete("e", true); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients[:10] {
		if !c.closed() {
			t.Fatal("a client is still connected after a hard removal")
		}
		c.nc.Close()
	}
	for _, c := range clients {
		c.nc.Close()
	}
	settle(t, base)
}
