package nbdclient

import (
	"bufio"
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
		if s, err := handshake(a, "x", nil); err == nil && s == nil {
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
