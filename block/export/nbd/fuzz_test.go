package nbd

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"minivmm/block/nbdproto"
)

// feed runs one connection of the server over a pipe on what a client
// sends, then hangs up: it must end, whatever the bytes.
func feed(t *testing.T, svc *Service, in []byte) { feedTLS(t, svc, nil, in) }

// feedTLS is feed on a server that requires TLS with conf (nil: none).
func feedTLS(t *testing.T, svc *Service, conf *tls.Config, in []byte) {
	srv, cli := net.Pipe()
	c := newConn(svc, srv)
	c.tlsConf = conf
	done := make(chan struct{})
	go func() { c.serve(); close(done) }()
	go io.Copy(io.Discard, cli)
	cli.SetWriteDeadline(time.Now().Add(5 * time.Second))
	cli.Write(in)
	cli.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the connection did not end on %x", in)
	}
}

// handshakeSeed is a valid negotiation up to transmission.
func handshakeSeed() []byte {
	p := binary.BigEndian.AppendUint32(nil, nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes)
	opt := func(o uint32, data []byte) {
		p = binary.BigEndian.AppendUint64(p, nbdproto.OptMagic)
		p = binary.BigEndian.AppendUint32(p, o)
		p = binary.BigEndian.AppendUint32(p, uint32(len(data)))
		p = append(p, data...)
	}
	opt(nbdproto.OptList, nil)
	opt(nbdproto.OptStructuredReply, nil)
	opt(nbdproto.OptListMetaContext, metaData("disk"))
	opt(nbdproto.OptSetMetaContext, metaData("disk", nbdproto.CtxBaseAllocation, nbdproto.CtxAllocationDepth))
	opt(nbdproto.OptInfo, append(str32("disk"), 0, 1, 0, nbdproto.InfoName))
	opt(nbdproto.OptGo, append(str32("disk"), 0, 0))
	return p
}

func encodeRequest(typ, flags uint16, handle, off uint64, length uint32, payload []byte) []byte {
	p := binary.BigEndian.AppendUint32(nil, nbdproto.RequestMagic)
	p = binary.BigEndian.AppendUint16(p, flags)
	p = binary.BigEndian.AppendUint16(p, typ)
	p = binary.BigEndian.AppendUint64(p, handle)
	p = binary.BigEndian.AppendUint64(p, off)
	p = binary.BigEndian.AppendUint32(p, length)
	return append(p, payload...)
}

// FuzzHandshake: any bytes during negotiation end in a reply or a closed
// connection, never a panic or a hang.
func FuzzHandshake(f *testing.F) {
	f.Add(handshakeSeed())
	f.Add(binary.BigEndian.AppendUint32(nil, 1<<7))
	for _, queries := range [][]string{{"qemu:"}, {"qemu:dirty-bitmap:"}, {"qemu:dirty-bitmap:b0", "base:"}, {"base:allocation\x00"}} {
		p := binary.BigEndian.AppendUint32(nil, nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes)
		p = binary.BigEndian.AppendUint64(p, nbdproto.OptMagic)
		p = binary.BigEndian.AppendUint32(p, nbdproto.OptListMetaContext)
		data := metaData("disk", queries...)
		p = binary.BigEndian.AppendUint32(p, uint32(len(data)))
		f.Add(append(p, data...))
	}
	ts := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, in []byte) { feed(t, ts.svc, in) })
}

// FuzzRequests: any requests after a valid negotiation are answered or
// end the connection; the export still works afterwards.
func FuzzRequests(f *testing.F) {
	f.Add(encodeRequest(nbdproto.CmdRead, 0, 1, 0, 4096, nil))
	f.Add(append(encodeRequest(nbdproto.CmdWrite, nbdproto.CmdFlagFUA, 2, 512, 4, []byte{1, 2, 3, 4}), encodeRequest(nbdproto.CmdBlockStatus, nbdproto.CmdFlagReqOne, 3, 0, 1<<20, nil)...))
	f.Add(encodeRequest(nbdproto.CmdWriteZeroes, nbdproto.CmdFlagNoHole, 4, 1<<20-1, 1, nil))
	f.Add(encodeRequest(nbdproto.CmdTrim, 0, 5, 0, 1<<20, nil))
	f.Add(encodeRequest(nbdproto.CmdCache, 0, 6, 0, 1<<20, nil))
	f.Add(encodeRequest(77, 0xffff, 7, 1<<63, 1<<31, nil))
	ts := newFuzzServer(f)
	hs := handshakeSeed()
	f.Fuzz(func(t *testing.T, in []byte) {
		feed(t, ts.svc, append(hs[:len(hs):len(hs)], in...))
		if n := ts.svc.lookup("disk"); n == nil || n.backend.Length() != 1<<20 {
			t.Fatal("the export changed")
		}
	})
}
