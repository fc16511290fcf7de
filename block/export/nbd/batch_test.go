package nbd

import (
	"bytes"
	"encoding/binary"
	"testing"

	"minivmm/block/nbdproto"
	"minivmm/internal/fdtest"
)

// requestBytes is one request on the wire.
func requestBytes(typ, flags uint16, handle, off uint64, length uint32, payload []byte) []byte {
	p := binary.BigEndian.AppendUint32(nil, nbdproto.RequestMagic)
	p = binary.BigEndian.AppendUint16(p, flags)
	p = binary.BigEndian.AppendUint16(p, typ)
	p = binary.BigEndian.AppendUint64(p, handle)
	p = binary.BigEndian.AppendUint64(p, off)
	p = binary.BigEndian.AppendUint32(p, length)
	return append(p, payload...)
}

// TestBurstReplies: requests arriving in one burst, served inline and
// on workers, each get their reply, the batch held for the next request
// notwithstanding; so do those before a DISC, or before a request that
// breaks the protocol, ending the burst.
func TestBurstReplies(t *testing.T) {
	fdtest.Check(t)
	ts := newTestServer(t, true, 0)
	for _, end := range []struct {
		name string
		p    []byte
	}{
		{"disc", requestBytes(nbdproto.CmdDisc, 0, 999, 0, 0, nil)},
		{"bad magic", bytes.Repeat([]byte{0xee}, nbdproto.RequestHeaderSize)},
	} {
		c := dial(t, ts.sock)
		c.open()
		var burst []byte
		want := map[uint64]bool{}
		for i := range 41 { // the last one small, served inline
			h := uint64(i + 1)
			want[h] = true
			switch i % 4 {
			case 0:
				burst = append(burst, requestBytes(nbdproto.CmdWrite, 0, h, uint64(i)*4096, 4096, bytes.Repeat([]byte{byte(i)}, 4096))...)
			case 1:
				burst = append(burst, requestBytes(nbdproto.CmdRead, nbdproto.CmdFlagDF, h, 0, 4096, nil)...)
			case 2:
				burst = append(burst, requestBytes(nbdproto.CmdFlush, 0, h, 0, 0, nil)...)
			case 3: // large: a worker's
				burst = append(burst, requestBytes(nbdproto.CmdRead, nbdproto.CmdFlagDF, h, 0, 256<<10, nil)...)
			}
		}
		c.write(append(burst, end.p...))
		for len(want) > 0 {
			r := c.chunk()
			if !want[r.handle] || r.errno != 0 {
				t.Fatalf("%s: reply %+v not expected", end.name, r)
			}
			delete(want, r.handle)
		}
		if !c.closed() {
			t.Errorf("%s: connection open after the burst's end", end.name)
		}
	}
}

// TestUnreadReplies: a client that sends a stream of reads and writes
// (megabytes each way) before it reads any reply is served: the reader
// goes on reading while the replies wait for the client, as far as the
// batch holds them.
func TestUnreadReplies(t *testing.T) {
	fdtest.Check(t)
	ts := newTestServer(t, true, 0)
	c := dial(t, ts.sock)
	c.open()
	var burst []byte
	const n = 48
	for i := range n {
		burst = append(burst, requestBytes(nbdproto.CmdRead, nbdproto.CmdFlagDF, uint64(2*i), 0, 64<<10, nil)...)
		burst = append(burst, requestBytes(nbdproto.CmdWrite, 0, uint64(2*i+1), 512<<10, 64<<10, make([]byte, 64<<10))...)
	}
	c.write(burst) // fails at the deadline if the server stopped reading
	for range 2 * n {
		if r := c.chunk(); r.errno != 0 || r.flags&nbdproto.ReplyFlagDone == 0 && !r.simple {
			t.Fatalf("reply %+v", r)
		}
	}
	c.request(nbdproto.CmdDisc, 0, 999, 0, 0, nil)
	if !c.closed() {
		t.Error("connection open after NBD_CMD_DISC")
	}
}
