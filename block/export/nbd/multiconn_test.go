package nbd

import (
	"bytes"
	"testing"

	"minivmm/block"
	"minivmm/block/faultdisk"
	"minivmm/block/nbdproto"
	_ "minivmm/block/raw"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// TestMultiConnFlush is what makes NBD_FLAG_CAN_MULTI_CONN true on a
// writable export: a FLUSH on one connection makes durable every write
// completed on any other. The node sits on a disk that keeps writes
// volatile until a flush reaches it, so the test sees durability, not
// only what reads return.
func TestMultiConnFlush(t *testing.T) {
	fdtest.Check(t)
	d := faultdisk.New(1 << 20)
	g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
	if err := d.Install(g, "fault"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.AddRoot(block.Options{"driver": "raw", "node-name": "f", "file": block.Options{"driver": "fault"}}); err != nil {
		t.Fatal(err)
	}
	ts := finishTestServer(t, g, t.TempDir(), true, 0)
	writers := []*client{dial(t, ts.sock), dial(t, ts.sock), dial(t, ts.sock)}
	for _, c := range writers {
		if _, flags := c.open(); flags&nbdproto.FlagCanMultiConn == 0 {
			t.Fatalf("multi-conn not advertised on a writable export: flags %#x", flags)
		}
	}
	flusher := dial(t, ts.sock)
	flusher.open()
	// Each writer has a burst in flight at once (small writes served
	// inline, large ones on workers), all answered before the flush.
	want := make([]byte, 1<<20)
	for i, c := range writers {
		for j, size := range []int{4096, 4096, 128 << 10} {
			off := i*256<<10 + j*64<<10
			p := bytes.Repeat([]byte{byte(1 + i*3 + j)}, size)
			copy(want[off:], p)
			c.request(nbdproto.CmdWrite, 0, uint64(j), uint64(off), uint32(size), p)
		}
	}
	for _, c := range writers {
		for range 3 {
			if r := c.chunk(); !r.simple || r.errno != 0 {
				t.Fatalf("write: %+v", r)
			}
		}
	}
	if len(d.Pending()) == 0 {
		t.Fatal("the writes are durable before any flush: the test proves nothing")
	}
	flusher.request(nbdproto.CmdFlush, 0, 99, 0, 0, nil)
	if r := flusher.chunk(); !r.simple || r.errno != 0 {
		t.Fatalf("flush: %+v", r)
	}
	if p := d.Pending(); len(p) != 0 {
		t.Fatalf("%d writes of other connections still volatile after the flush", len(p))
	}
	if !bytes.Equal(d.Durable(), want) {
		t.Fatal("the durable image lacks writes completed on other connections")
	}
	for _, c := range append(writers, flusher) {
		c.request(nbdproto.CmdDisc, 0, 100, 0, 0, nil)
		if !c.closed() {
			t.Error("connection open after NBD_CMD_DISC")
		}
	}
}
