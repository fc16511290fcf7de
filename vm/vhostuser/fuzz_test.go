package vhostuser

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/internal/fdtest"
	"minivmm/vm/virtioblk"
)

// FuzzSession feeds a session arbitrary messages: the input is a series
// of chunks, each [u16 length][u8 fd mask][bytes], sent with one sendmsg
// carrying a memfd (mask bit 0) and eventfds (bits 1 and 2). Whatever
// arrives, the session must not panic or hang, and once it ends every fd
// it received must be closed.
func FuzzSession(f *testing.F) {
	chunk := func(mask byte, m *Message) []byte {
		b := m.encode()
		return append(binary.LittleEndian.AppendUint16([]byte(nil), uint16(len(b))), append([]byte{mask}, b...)...)
	}
	msg := func(r Request, p []byte) *Message { return &Message{Request: r, Flags: flagVersion, Payload: p} }
	var good []byte
	for _, c := range [][]byte{
		chunk(0, msg(GetFeatures, nil)),
		chunk(0, msg(SetProtocolFeatures, u64Payload(protocolFeatures))),
		chunk(0, msg(SetFeatures, u64Payload(1<<32|1<<FeatureProtocolFeatures))),
		chunk(0, msg(GetInflightFd, Inflight{NumQueues: 1, QueueSize: 16}.encode())),
		chunk(1, msg(SetInflightFd, Inflight{MmapSize: 4096, NumQueues: 1, QueueSize: 16}.encode())),
		chunk(1, msg(SetMemTable, encodeMemTable([]MemRegion{{0, 1 << 16, userBase, 0}}))),
		chunk(0, msg(SetVringNum, VringState{0, 16}.encode())),
		chunk(0, msg(SetVringAddr, VringAddr{Desc: userBase, Avail: userBase + 0x1000, Used: userBase + 0x2000}.encode())),
		chunk(2, msg(SetVringKick, u64Payload(0))),
		chunk(4, msg(SetVringCall, u64Payload(0))),
		chunk(0, msg(SetVringEnable, VringState{0, 1}.encode())),
		chunk(0, msg(GetConfig, ConfigSpace{Data: make([]byte, 16)}.encode())),
		chunk(0, msg(GetVringBase, VringState{0, 0}.encode())),
		chunk(1, msg(SetMemTable, encodeMemTable([]MemRegion{{0, 1 << 16, userBase, 0}}))),
		chunk(0, msg(ResetOwner, nil)),
	} {
		good = append(good, c...)
	}
	f.Add(good)
	f.Add(append(good, 0)) // the same on the real device
	f.Add(chunk(7, msg(SetOwner, nil)))
	f.Add([]byte{3, 0, 6, 1, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		before := fdtest.Count()
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		sf := os.NewFile(uintptr(sp[0]), "server")
		fc, err := net.FileConn(sf)
		sf.Close()
		if err != nil {
			t.Fatal(err)
		}
		srv := fc.(*net.UnixConn)
		// Odd lengths drive the real virtio-blk device (on a disk in
		// memory), even ones the fake that records calls.
		var dev Device = &fakeDevice{}
		if len(data)%2 == 1 {
			vb, err := virtioblk.New(&memDisk{b: make([]byte, 1<<16)}, virtioblk.Config{NumQueues: 2, WriteCache: true})
			if err != nil {
				t.Fatal(err)
			}
			dev = &blkDevice{dev: vb, numQueues: 2, logf: func(string, ...any) {}}
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			newSession(srv, dev).serve()
			srv.Close()
		}()
		cl := sp[1]
		// Replies are drained so that the session never blocks on them.
		drained := make(chan struct{})
		r := os.NewFile(uintptr(mustDup(t, cl)), "client-reader")
		go func() {
			defer close(drained)
			io.Copy(io.Discard, r)
			r.Close()
		}()
		for len(data) >= 3 {
			n := int(binary.LittleEndian.Uint16(data))
			mask := data[2]
			data = data[3:]
			n = min(n, len(data))
			var fds []int
			if mask&1 != 0 {
				fds = append(fds, memfd(t, 1<<16))
			}
			for _, bit := range []byte{2, 4} {
				if mask&bit != 0 {
					fds = append(fds, eventfd(t))
				}
			}
			var oob []byte
			if len(fds) > 0 {
				oob = unix.UnixRights(fds...)
			}
			if n > 0 {
				err = unix.Sendmsg(cl, data[:n], oob, nil, 0)
			}
			closeFds(fds)
			data = data[n:]
			if err != nil {
				break // the session hung up
			}
		}
		unix.Shutdown(cl, unix.SHUT_WR)
		<-done
		unix.Close(cl)
		<-drained
		if n := fdtest.Count(); n != before {
			t.Fatalf("%d fds open after the session, %d before", n, before)
		}
	})
}

func mustDup(t *testing.T, fd int) int {
	d, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	unix.CloseOnExec(d)
	return d
}

// memDisk is a disk in memory for the real device under the fuzzer.
type memDisk struct {
	mu sync.Mutex
	b  []byte
}

func (d *memDisk) span(off int64, n int) (int64, bool) {
	return off, off >= 0 && off+int64(n) <= int64(len(d.b))
}

func (d *memDisk) ReadV(bufs [][]byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, b := range bufs {
		if _, ok := d.span(off+int64(n), len(b)); !ok {
			return n, unix.EIO
		}
		n += copy(b, d.b[off+int64(n):])
	}
	return n, nil
}

func (d *memDisk) WriteV(bufs [][]byte, off int64, _ block.WriteFlags) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, b := range bufs {
		if _, ok := d.span(off+int64(n), len(b)); !ok {
			return n, unix.EIO
		}
		n += copy(d.b[off+int64(n):], b)
	}
	return n, nil
}

func (d *memDisk) Flush() error                                { return nil }
func (d *memDisk) Discard(off, length int64) error             { return nil }
func (d *memDisk) WriteZeroes(off, length int64, _ bool) error { return nil }
func (d *memDisk) Length() int64                               { return int64(len(d.b)) }

// FuzzCodec feeds the message codec alone: a header and each payload
// parser. Whatever decodes must encode back to the bytes it came from.
func FuzzCodec(f *testing.F) {
	f.Add((&Message{Request: SetMemTable, Flags: flagVersion, Payload: encodeMemTable([]MemRegion{{1, 2, 3, 4}})}).encode(), 1)
	f.Add((&Message{Request: SetVringAddr, Flags: flagVersion, Payload: VringAddr{1, 0, 2, 3, 4, 5}.encode()}).encode(), 0)
	f.Add((&Message{Request: GetConfig, Flags: flagVersion, Payload: ConfigSpace{Offset: 4, Data: []byte{1, 2}}.encode()}).encode(), 0)
	f.Fuzz(func(t *testing.T, b []byte, nfds int) {
		if len(b) < headerSize {
			return
		}
		req, flags, size, err := decodeHeader(b[:headerSize])
		if err != nil {
			return
		}
		p := b[headerSize:]
		if uint32(len(p)) > size {
			p = p[:size]
		}
		m := &Message{Request: req, Flags: flags, Payload: p, Fds: make([]int, max(0, min(nfds, 16)))}
		for i := range m.Fds {
			m.Fds[i] = 1000 + i // stand-ins: the parsers only count and pass them
		}
		if regs, err := m.memTable(); err == nil {
			// Bytes 4-8 are padding, written as zero.
			got := encodeMemTable(regs)
			if string(got[:4]) != string(p[:4]) || string(got[8:]) != string(p[8:len(got)]) || len(regs) != len(m.Fds) {
				t.Errorf("memory table %x re-encodes as %x", p, got)
			}
		}
		if a, err := m.vringAddr(); err == nil && string(a.encode()) != string(p[:vringAddrSize]) {
			t.Errorf("vring address %x re-encodes as %x", p, a.encode())
		}
		if s, err := m.vringState(); err == nil && string(s.encode()) != string(p[:8]) {
			t.Errorf("vring state %x re-encodes as %x", p, s.encode())
		}
		if c, err := m.config(); err == nil {
			if got := c.encode(); string(got) != string(p[:len(got)]) || len(c.Data) > maxConfigSize {
				t.Errorf("config %x re-encodes as %x", p, got)
			}
		}
		if i, fd, err := m.vringFd(); err == nil && (i > 0xff || (fd >= 0) != (len(m.Fds) == 1)) {
			t.Errorf("vring fd %x: index %d fd %d with %d fds", p, i, fd, len(m.Fds))
		}
		m.u64()
	})
}
