package nbdclient

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"minivmm/block/nbdproto"
)

// FuzzServerBytes: whatever a server sends, during the handshake or as
// replies to a read and a block status in flight, the client neither
// panics nor hangs, nor writes outside the read's buffer.
func FuzzServerBytes(f *testing.F) {
	hello := binary.BigEndian.AppendUint64(nil, nbdproto.Magic)
	hello = binary.BigEndian.AppendUint64(hello, nbdproto.OptMagic)
	hello = binary.BigEndian.AppendUint16(hello, 3)
	f.Add(hello, []byte{})
	reply := binary.BigEndian.AppendUint32(nil, nbdproto.StructuredReplyMagic)
	reply = binary.BigEndian.AppendUint16(reply, nbdproto.ReplyFlagDone)
	reply = binary.BigEndian.AppendUint16(reply, nbdproto.ChunkOffsetHole)
	reply = binary.BigEndian.AppendUint64(reply, 1)
	reply = binary.BigEndian.AppendUint32(reply, 12)
	reply = binary.BigEndian.AppendUint64(reply, 0)
	reply = binary.BigEndian.AppendUint32(reply, 8)
	f.Add([]byte{}, reply)
	f.Fuzz(func(t *testing.T, handshakeBytes, replyBytes []byte) {
		// The handshake.
		a, b := net.Pipe()
		go io.Copy(io.Discard, b)
		go func() { b.Write(handshakeBytes); b.Close() }()
		a.SetDeadline(time.Now().Add(5 * time.Second))
		if s, err := handshake(a, "x", nbdproto.CtxBaseAllocation, nil); err == nil && s == nil {
			t.Fatal("no session and no error")
		}
		a.Close()
		// Replies.
		a, b = net.Pipe()
		s := &session{nc: a, pending: map[uint64]*call{}, haveStatus: true}
		buf := make([]byte, 16)
		guard := make([]byte, 32)
		whole := append(buf, guard...)[:16]
		c1 := &call{buf: whole, off: 0, done: make(chan error, 1)}
		c2 := &call{extent: func(uint32, uint32) {}, done: make(chan error, 1)}
		s.pending[1], s.pending[2] = c1, c2
		go func() { b.Write(replyBytes); b.Close() }()
		done := make(chan struct{})
		go func() { s.readLoop(bufio.NewReader(a)); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("readLoop did not end")
		}
		for _, c := range []*call{c1, c2} {
			select {
			case <-c.done:
			default:
				t.Fatal("a request was left waiting after the connection ended")
			}
		}
		if whole = whole[:cap(whole)]; len(whole) > 16 {
			for _, x := range whole[16:] {
				if x != 0 {
					t.Fatal("a reply wrote past the read's buffer")
				}
			}
		}
	})
}

// FuzzStartTLS: whatever a server answers NBD_OPT_STARTTLS with (and
// sends after), the client ends with an error or a session, never a
// panic or a hang.
func FuzzStartTLS(f *testing.F) {
	hello := []byte("NBDMAGIC\x49\x48\x41\x56\x45\x4F\x50\x54\x00\x03")
	ack := []byte{0, 3, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0}
	f.Add(append(append([]byte{}, hello...), ack...))
	f.Add(append(append([]byte{}, hello...), 0, 3, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0, 0, 5, 0x80, 0, 0, 5, 0, 0, 0, 2, 'n', 'o'))
	f.Fuzz(func(t *testing.T, server []byte) {
		a, b := net.Pipe()
		go io.Copy(io.Discard, b)
		go func() { b.Write(server); b.Close() }()
		a.SetDeadline(time.Now().Add(5 * time.Second))
		if s, err := handshake(a, "x", nbdproto.CtxBaseAllocation, &tls.Config{InsecureSkipVerify: true}); err == nil && s == nil {
			t.Fatal("no session and no error")
		}
		a.Close()
	})
}
