package vhostuser

import (
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
)

func listen(t *testing.T, dev Device) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vu.sock")
	srv, err := Listen(path, dev, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, path
}

// acked sends a request with need_reply and checks the back end's ack.
func (c *client) acked(req Request, payload []byte, fds ...int) {
	c.t.Helper()
	c.send(req, flagVersion|flagNeedReply, payload, fds...)
	closeFds(fds)
	r := c.recv()
	if r.Request != req || len(r.Payload) != 8 || binary.LittleEndian.Uint64(r.Payload) != 0 {
		c.t.Fatalf("%v: ack %v %x", req, r.Request, r.Payload)
	}
}

// handshake does what QEMU's vhost-user-blk does on connecting.
func handshake(t *testing.T, c *client) {
	t.Helper()
	f := binary.LittleEndian.Uint64(c.call(GetFeatures, nil))
	if f&(1<<FeatureProtocolFeatures) == 0 {
		t.Fatalf("GET_FEATURES %#x without PROTOCOL_FEATURES", f)
	}
	pf := binary.LittleEndian.Uint64(c.call(GetProtocolFeatures, nil))
	for _, bit := range []int{ProtocolMQ, ProtocolReplyAck, ProtocolConfig} {
		if pf&(1<<bit) == 0 {
			t.Fatalf("GET_PROTOCOL_FEATURES %#x lacks bit %d", pf, bit)
		}
	}
	c.send(SetProtocolFeatures, flagVersion, u64Payload(1<<ProtocolMQ|1<<ProtocolReplyAck|1<<ProtocolConfig))
	if n := binary.LittleEndian.Uint64(c.call(GetQueueNum, nil)); n != 2 {
		t.Fatalf("GET_QUEUE_NUM %d, want 2", n)
	}
	c.acked(SetOwner, nil)
	c.acked(SetFeatures, u64Payload(f&(1<<32|1<<FeatureProtocolFeatures)))
}

const userBase = 0x7f0000000000

// setupRing sets up queue i on 1 MiB of memory at GPA 0x100000.
func setupRing(t *testing.T, c *client, i uint32, kick, call int) {
	t.Helper()
	c.acked(SetVringNum, VringState{i, 256}.encode())
	c.acked(SetVringBase, VringState{i, 3}.encode())
	c.acked(SetVringAddr, VringAddr{Index: i, Desc: userBase + 0x1000, Avail: userBase + 0x2000, Used: userBase + 0x3000}.encode())
	c.acked(SetVringKick, u64Payload(uint64(i)), kick)
	c.acked(SetVringCall, u64Payload(uint64(i)), call)
}

func memTable(t *testing.T, c *client) {
	t.Helper()
	c.acked(SetMemTable, encodeMemTable([]MemRegion{{GPA: 0x100000, Size: 1 << 20, UserAddr: userBase}}), memfd(t, 1<<20))
}

func TestNegotiateAndConfig(t *testing.T) {
	fdtest.Check(t)
	dev := &fakeDevice{}
	_, path := listen(t, dev)
	c := dial(t, path)
	defer c.close()
	handshake(t, c)
	if a := dev.ackedFeatures(); a != 1<<32 {
		t.Errorf("device acked %#x, want VERSION_1 alone", a)
	}
	tests := []struct {
		off, size uint32
		want      []byte
	}{
		{0, 8, []byte{0, 1, 2, 3, 4, 5, 6, 7}},
		{20, 4, []byte{20, 21, 22, 23}},
		{58, 4, nil}, // past the end: an empty answer
	}
	for _, tt := range tests {
		r := c.call(GetConfig, ConfigSpace{Offset: tt.off, Data: make([]byte, tt.size)}.encode())
		cs, err := (&Message{Payload: r}).config()
		if err != nil {
			t.Fatal(err)
		}
		if string(cs.Data) != string(tt.want) {
			t.Errorf("GET_CONFIG %d+%d = %v, want %v", tt.off, tt.size, cs.Data, tt.want)
		}
	}
	c.acked(SetConfig, ConfigSpace{Offset: 32, Data: []byte{9}}.encode())
	if dev.Config()[32] != 9 {
		t.Error("SET_CONFIG did not reach the device")
	}
}

// TestRingLifecycle: a ring starts when kicked and enabled, on the
// translated addresses; kicks and notifications flow; GET_VRING_BASE stops
// it and answers the device's index; fds replaced or forgotten are closed.
func TestRingLifecycle(t *testing.T) {
	fdtest.Check(t)
	dev := &fakeDevice{}
	_, path := listen(t, dev)
	c := dial(t, path)
	defer c.close()
	handshake(t, c)
	base := fdtest.Count()
	memTable(t, c)
	if n := fdtest.Count(); n != base+1 {
		t.Fatalf("after SET_MEM_TABLE %d fds open, want %d (the region's)", n, base+1)
	}
	kick, call := eventfd(t), eventfd(t)
	kickDup, _ := unix.Dup(kick)
	callDup, _ := unix.Dup(call)
	defer unix.Close(kickDup)
	defer unix.Close(callDup)
	setupRing(t, c, 1, kick, call)
	if dev.lastQueue() != nil {
		t.Fatal("ring started before SET_VRING_ENABLE (protocol features were negotiated)")
	}
	c.acked(SetVringEnable, VringState{1, 1}.encode())
	q := dev.lastQueue()
	if q == nil {
		t.Fatal("ring did not start once enabled")
	}
	type ring struct {
		Index             int
		Size              uint16
		Desc, Avail, Used uint64
		Base              uint16
	}
	want := ring{1, 256, 0x101000, 0x102000, 0x103000, 3}
	got := ring{q.cfg.Index, q.cfg.Size, q.cfg.Desc, q.cfg.Avail, q.cfg.Used, q.cfg.Base}
	if got != want {
		t.Errorf("queue %+v, want %+v", got, want)
	}
	<-q.kicks // the kick start gives
	unix.Write(kickDup, u64Payload(1))
	select {
	case <-q.kicks:
	case <-time.After(5 * time.Second):
		t.Fatal("a kick did not reach the queue")
	}
	q.cfg.Notify()
	var b [8]byte
	if n, err := unix.Read(callDup, b[:]); n != 8 || err != nil {
		t.Fatalf("call eventfd not signalled: %d %v", n, err)
	}
	// A replaced call fd is closed.
	c.acked(SetVringCall, u64Payload(1), eventfd(t))
	if n := fdtest.Count(); n != base+1+2+2 {
		t.Errorf("after replacing the call fd %d fds open, want %d", n, base+5)
	}
	st, _ := (&Message{Payload: c.call(GetVringBase, VringState{1, 0}.encode())}).vringState()
	if st != (VringState{1, 10}) {
		t.Errorf("GET_VRING_BASE = %+v, want {1 10}", st)
	}
	if !q.isStopped() {
		t.Error("GET_VRING_BASE did not stop the queue")
	}
	if n := fdtest.Count(); n != base+1+2 {
		t.Errorf("after GET_VRING_BASE %d fds open, want %d (kick and call closed)", n, base+3)
	}
	// The ring restarts where it stopped.
	setupRing(t, c, 1, eventfd(t), eventfd(t))
	if q2 := dev.lastQueue(); q2 == q || q2.cfg.Base != 3 {
		// SET_VRING_BASE in setupRing set 3 again, as QEMU does.
		t.Errorf("restarted queue base %d", q2.cfg.Base)
	}
	c.acked(ResetOwner, nil)
	if n := fdtest.Count(); n != base+1+2 {
		t.Errorf("after RESET_OWNER %d fds open, want %d (memory kept, ring fds closed)", n, base+3)
	}
}

// TestDisconnectReleases: a front end that goes away with its rings
// running leaves nothing open, and the next one is served.
func TestDisconnectReleases(t *testing.T) {
	fdtest.Check(t)
	dev := &fakeDevice{}
	_, path := listen(t, dev)
	for round := range 3 {
		before := fdtest.Count()
		c := dial(t, path)
		handshake(t, c)
		memTable(t, c)
		for i := range uint32(2) {
			setupRing(t, c, i, eventfd(t), eventfd(t))
			c.acked(SetVringEnable, VringState{i, 1}.encode())
		}
		c.close()
		waitCount(t, before, "round %d: after the front end disconnected", round)
		if q := dev.lastQueue(); !q.isStopped() {
			t.Errorf("round %d: queue still running after disconnect", round)
		}
	}
}

func waitCount(t *testing.T, want int, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := fdtest.Count()
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf(format+": %d fds open, want %d", append(args, n, want)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func header(req Request, flags, size uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(req))
	b = binary.LittleEndian.AppendUint32(b, flags)
	return binary.LittleEndian.AppendUint32(b, size)
}

// TestBadMessages: each gets the connection closed, every fd it carried
// and the session held closed, and the next front end is served.
func TestBadMessages(t *testing.T) {
	fdtest.Check(t)
	dev := &fakeDevice{}
	_, path := listen(t, dev)
	pipeFd := func(t *testing.T) int {
		var p [2]int
		unix.Pipe2(p[:], unix.O_CLOEXEC)
		unix.Close(p[1])
		return p[0]
	}
	tests := []struct {
		name string
		raw  func(t *testing.T) ([]byte, []int)
	}{
		{"version 2", func(t *testing.T) ([]byte, []int) { return header(GetFeatures, 2, 0), nil }},
		{"reply flag", func(t *testing.T) ([]byte, []int) { return header(GetFeatures, 1|flagReply, 0), nil }},
		{"huge payload", func(t *testing.T) ([]byte, []int) { return header(SetMemTable, 1, 1<<20), []int{memfd(t, 4096)} }},
		{"cut payload", func(t *testing.T) ([]byte, []int) { return append(header(SetFeatures, 1, 8), 1, 2), []int{eventfd(t)} }},
		{"cut header", func(t *testing.T) ([]byte, []int) { return []byte{1, 0, 0}, []int{eventfd(t)} }},
		{"unknown request", func(t *testing.T) ([]byte, []int) { return header(99, 1, 0), []int{eventfd(t)} }},
		{"log fd", func(t *testing.T) ([]byte, []int) { return header(SetLogFd, 1, 0), []int{eventfd(t)} }},
		{"mem table, fd missing", func(t *testing.T) ([]byte, []int) {
			p := encodeMemTable([]MemRegion{{0, 4096, 0, 0}, {8192, 4096, 8192, 0}})
			return append(header(SetMemTable, 1, uint32(len(p))), p...), []int{memfd(t, 4096)}
		}},
		{"mem table, pipe", func(t *testing.T) ([]byte, []int) {
			p := encodeMemTable([]MemRegion{{0, 4096, 0, 0}})
			return append(header(SetMemTable, 1, uint32(len(p))), p...), []int{pipeFd(t)}
		}},
		{"mem table, past the file's end", func(t *testing.T) ([]byte, []int) {
			p := encodeMemTable([]MemRegion{{0, 1 << 20, 0, 0}})
			return append(header(SetMemTable, 1, uint32(len(p))), p...), []int{memfd(t, 4096)}
		}},
		{"mem table, overlap", func(t *testing.T) ([]byte, []int) {
			p := encodeMemTable([]MemRegion{{0, 8192, 0, 0}, {4096, 4096, 1 << 20, 0}})
			return append(header(SetMemTable, 1, uint32(len(p))), p...), []int{memfd(t, 8192), memfd(t, 8192)}
		}},
		{"mem table, zero regions", func(t *testing.T) ([]byte, []int) {
			p := encodeMemTable(nil)
			return append(header(SetMemTable, 1, uint32(len(p))), p...), []int{memfd(t, 8192)}
		}},
		{"too many fds", func(t *testing.T) ([]byte, []int) {
			var fds []int
			for range maxFds + 4 {
				fds = append(fds, eventfd(t))
			}
			return header(SetOwner, 1, 0), fds
		}},
		{"queue out of range", func(t *testing.T) ([]byte, []int) {
			p := u64Payload(7)
			return append(header(SetVringCall, 1, 8), p...), []int{eventfd(t)}
		}},
		{"call without fd", func(t *testing.T) ([]byte, []int) {
			return append(header(SetVringCall, 1, 8), u64Payload(0)...), nil
		}},
		{"two fds for a call", func(t *testing.T) ([]byte, []int) {
			return append(header(SetVringCall, 1, 8), u64Payload(0)...), []int{eventfd(t), eventfd(t)}
		}},
		{"kick polling", func(t *testing.T) ([]byte, []int) {
			return append(header(SetVringKick, 1, 8), u64Payload(1<<8)...), nil
		}},
		{"ring size 3", func(t *testing.T) ([]byte, []int) {
			return append(header(SetVringNum, 1, 8), VringState{0, 3}.encode()...), nil
		}},
		{"features not offered", func(t *testing.T) ([]byte, []int) {
			return append(header(SetFeatures, 1, 8), u64Payload(1<<40)...), nil
		}},
		{"short vring addr", func(t *testing.T) ([]byte, []int) {
			return append(header(SetVringAddr, 1, 8), u64Payload(0)...), nil
		}},
		{"config too big", func(t *testing.T) ([]byte, []int) {
			p := ConfigSpace{Data: make([]byte, 300)}.encode()[:12]
			return append(header(GetConfig, 1, 12), p...), nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := fdtest.Count()
			c := dial(t, path)
			handshake(t, c)
			memTable(t, c)
			setupRing(t, c, 0, eventfd(t), eventfd(t))
			c.acked(SetVringEnable, VringState{0, 1}.encode())
			raw, fds := tt.raw(t)
			var oob []byte
			if len(fds) > 0 {
				oob = unix.UnixRights(fds...)
			}
			if _, _, err := c.c.WriteMsgUnix(raw, oob, nil); err != nil {
				t.Fatal(err)
			}
			closeFds(fds)
			if tt.name == "cut payload" || tt.name == "cut header" {
				c.c.CloseWrite()
			}
			c.expectClosed()
			c.close()
			waitCount(t, before, "after %s", tt.name)
			// The next front end is served.
			c2 := dial(t, path)
			handshake(t, c2)
			c2.close()
			waitCount(t, before, "after the next front end")
		})
	}
}
