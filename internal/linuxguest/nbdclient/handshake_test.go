package main

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// server is a scripted peer: what the server sends, and what the client
// wrote.
type server struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (s *server) Read(p []byte) (int, error)  { return s.in.Read(p) }
func (s *server) Write(p []byte) (int, error) { return s.out.Write(p) }

func greeting(flags uint16) []byte {
	b := binary.BigEndian.AppendUint64(nil, magicNBD)
	b = binary.BigEndian.AppendUint64(b, magicOpt)
	return binary.BigEndian.AppendUint16(b, flags)
}

func reply(typ uint32, body []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, magicOptReply)
	b = binary.BigEndian.AppendUint32(b, optGo)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

func infoExportBody(size uint64, flags uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, infoExport)
	b = binary.BigEndian.AppendUint64(b, size)
	return binary.BigEndian.AppendUint16(b, flags)
}

func infoBlockBody(min, pref, max uint32) []byte {
	b := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	b = binary.BigEndian.AppendUint32(b, min)
	b = binary.BigEndian.AppendUint32(b, pref)
	return binary.BigEndian.AppendUint32(b, max)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestNegotiate(t *testing.T) {
	for _, tt := range []struct {
		name    string
		server  []byte
		want    export
		wantErr string
	}{
		{"go", cat(greeting(flagFixedNew|flagNoZeroes), reply(repInfo, infoExportBody(1<<20, 0x4d)),
			reply(repInfo, infoBlockBody(1, 4096, 32<<20)), reply(repAck, nil)),
			export{size: 1 << 20, flags: 0x4d, minBlock: 1, prefBlock: 4096, max: 32 << 20}, ""},
		{"no block size", cat(greeting(flagFixedNew), reply(repInfo, infoExportBody(512, 3)), reply(repAck, nil)),
			export{size: 512, flags: 3}, ""},
		{"unknown export", cat(greeting(flagFixedNew), reply(repErrBit|6, []byte("no such export"))), export{}, "refused"},
		{"oldstyle", cat(binary.BigEndian.AppendUint64(nil, magicNBD), make([]byte, 10)), export{}, "not a newstyle"},
		{"not fixed", greeting(0), export{}, "fixed newstyle"},
		{"ack first", cat(greeting(flagFixedNew), reply(repAck, nil)), export{}, "without NBD_INFO_EXPORT"},
		{"short info", cat(greeting(flagFixedNew), reply(repInfo, []byte{0, 0, 1})), export{}, "NBD_INFO_EXPORT of 3"},
		{"huge reply", cat(greeting(flagFixedNew), reply(repInfo, nil)[:16], binary.BigEndian.AppendUint32(nil, 1<<31)),
			export{}, "reply of"},
		{"cut", greeting(flagFixedNew)[:10], export{}, "greeting"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &server{in: bytes.NewReader(tt.server)}
			got, err := negotiate(s, "disk")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("export %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestNegotiateSends checks the bytes of the client's side against the
// spec's layout, written out by hand.
func TestNegotiateSends(t *testing.T) {
	s := &server{in: bytes.NewReader(cat(greeting(flagFixedNew|flagNoZeroes),
		reply(repInfo, infoExportBody(1, 0)), reply(repAck, nil)))}
	if _, err := negotiate(s, "ab"); err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0, 0, 0, 3, // client flags: FIXED_NEWSTYLE | NO_ZEROES
		'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T',
		0, 0, 0, 7, // NBD_OPT_GO
		0, 0, 0, 10, // length
		0, 0, 0, 2, 'a', 'b', // name
		0, 1, 0, 3, // one request: NBD_INFO_BLOCK_SIZE
	}
	if !bytes.Equal(s.out.Bytes(), want) {
		t.Errorf("sent % x\nwant % x", s.out.Bytes(), want)
	}
}

func TestBlockSize(t *testing.T) {
	for _, tt := range []struct {
		e    export
		want uint32
	}{
		{export{minBlock: 1, prefBlock: 4096}, 4096},
		{export{}, 512},
		{export{prefBlock: 65536}, 512},
		{export{prefBlock: 3000}, 512},
		{export{minBlock: 1024, prefBlock: 1024}, 1024},
	} {
		if got := blockSize(tt.e); got != tt.want {
			t.Errorf("blockSize(%+v) = %d, want %d", tt.e, got, tt.want)
		}
	}
}

// FuzzNegotiate: whatever a server sends, negotiate returns (no panic, no
// allocation beyond the reply limit) and an export only after an ACK.
func FuzzNegotiate(f *testing.F) {
	f.Add(cat(greeting(flagFixedNew|flagNoZeroes), reply(repInfo, infoExportBody(1<<20, 0x4d)),
		reply(repInfo, infoBlockBody(1, 4096, 32<<20)), reply(repAck, nil)))
	f.Add(cat(greeting(flagFixedNew), reply(repErrBit|1, nil)))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := &server{in: bytes.NewReader(b)}
		if _, err := negotiate(s, "disk"); err == nil {
			n := len(b) - s.in.Len()
			if ack := reply(repAck, nil); n < len(ack) || !bytes.Equal(b[n-len(ack):n], ack) {
				t.Fatalf("success without an NBD_REP_ACK last: % x", b[:n])
			}
		}
	})
}
