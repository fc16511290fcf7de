package nbd

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"minivmm/block"
	"minivmm/block/nbdproto"
	"minivmm/internal/fdtest"
)

// newBitmapServer is the test server with bitmaps b0 (4 KiB granules,
// recording) and b1 (64 KiB, disabled) on its node, and a second
// export "bm" of the same node offering both (b1 by node and name).
func newBitmapServer(t testing.TB) *testServer {
	t.Helper()
	if tt, ok := t.(*testing.T); ok {
		fdtest.Check(tt) // registered first: checked once the server is gone
	}
	ts := newServerTB(t, true, 0)
	for _, a := range []block.BitmapAction{
		{Op: "add", Node: "f", Name: "b0", Granularity: 4096, HasGranularity: true},
		{Op: "add", Node: "f", Name: "b1", Disabled: true},
	} {
		if err := ts.graph.Bitmaps(a); err != nil {
			t.Fatal(err)
		}
	}
	o := ExportOptions{ID: "bm", NodeName: "f", Name: "bm", Writable: true,
		Bitmaps: []block.BitmapRef{{Name: "b0"}, {Node: "f", Name: "b1"}}}
	if err := ts.table.Add(o); err != nil {
		t.Fatal(err)
	}
	return ts
}

// metaReplies sends a meta context option and returns its answers as
// "id name", or the error reply's type.
func (c *client) metaReplies(opt uint32, data []byte) []string {
	c.t.Helper()
	c.option(opt, data)
	var out []string
	for {
		typ, p := c.reply(opt)
		switch typ {
		case nbdproto.RepAck:
			return out
		case nbdproto.RepMetaContext:
			out = append(out, fmt.Sprintf("%d %s", binary.BigEndian.Uint32(p), p[4:]))
		default:
			return append(out, fmt.Sprintf("error %#x", typ))
		}
	}
}

// TestMetaContextQueries: what LIST and SET answer for each kind of
// query, as QEMU 7.2's nbd_negotiate_meta_queries does (an empty leaf
// matches all under its prefix in a LIST only; ids are 0 in a LIST,
// 2+i for the i-th bitmap in a SET).
func TestMetaContextQueries(t *testing.T) {
	ts := newBitmapServer(t)
	c := dial(t, ts.sock)
	c.hello(nbdproto.FlagFixedNewstyle | nbdproto.FlagNoZeroes)
	list, set := uint32(nbdproto.OptListMetaContext), uint32(nbdproto.OptSetMetaContext)
	if got := c.metaReplies(set, metaData("bm", "base:allocation")); !slices.Equal(got, []string{fmt.Sprintf("error %#x", uint32(nbdproto.RepErrInvalid))}) {
		t.Errorf("SET before structured replies: %q", got)
	}
	c.option(nbdproto.OptStructuredReply, nil)
	c.reply(nbdproto.OptStructuredReply)
	for _, tt := range []struct {
		opt     uint32
		export  string
		queries []string
		want    []string
	}{
		{list, "bm", nil, []string{"0 base:allocation", "0 qemu:dirty-bitmap:b0", "0 qemu:dirty-bitmap:b1"}},
		{list, "disk", nil, []string{"0 base:allocation", "0 qemu:allocation-depth"}},
		{list, "bm", []string{"qemu:"}, []string{"0 qemu:dirty-bitmap:b0", "0 qemu:dirty-bitmap:b1"}},
		{list, "disk", []string{"qemu:"}, []string{"0 qemu:allocation-depth"}},
		{list, "bm", []string{"qemu:dirty-bitmap:"}, []string{"0 qemu:dirty-bitmap:b0", "0 qemu:dirty-bitmap:b1"}},
		{list, "bm", []string{"qemu:dirty-bitmap:b1", "base:"}, []string{"0 base:allocation", "0 qemu:dirty-bitmap:b1"}},
		{list, "bm", []string{"qemu:dirty-bitmap:zz", "qemu:allocation-depth", "x:y", "qemu:dirty-bitmap:b1x"}, nil},
		{list, "bm", []string{"base:allocation", "qemu:dirty-bitmap:b0\x00junk"}, []string{fmt.Sprintf("error %#x", uint32(nbdproto.RepErrInvalid))}},
		{list, "nope", nil, []string{fmt.Sprintf("error %#x", uint32(nbdproto.RepErrUnknown))}},
		{set, "bm", []string{"qemu:dirty-bitmap:", "qemu:", "base:"}, nil},
		{set, "bm", []string{"qemu:dirty-bitmap:b1", "base:allocation", "qemu:dirty-bitmap:b1"}, []string{"0 base:allocation", "3 qemu:dirty-bitmap:b1"}},
	} {
		if got := c.metaReplies(tt.opt, metaData(tt.export, tt.queries...)); !slices.Equal(got, tt.want) {
			t.Errorf("option %d on %s with %q: %q, want %q", tt.opt, tt.export, tt.queries, got, tt.want)
		}
	}
	// A query longer than any context is skipped, not refused.
	if got := c.metaReplies(list, metaData("bm", string(make([]byte, nbdproto.MaxString+1)), "base:allocation")); !slices.Equal(got, []string{"0 base:allocation"}) {
		t.Errorf("a long query: %q", got)
	}
}

// TestBitmapBlockStatus: block status answers one chunk per selected
// context, base:allocation first (the sparse file's holes around the
// write), the bitmap's dirty runs as QEMU's
// bitmap_to_extents cuts them (clipped to the request), one extent each
// with REQ_ONE; the bitmaps record writes through the other export.
func TestBitmapBlockStatus(t *testing.T) {
	ts := newBitmapServer(t)
	w := dial(t, ts.sock)
	w.open()
	w.request(nbdproto.CmdWrite, 0, 1, 4096+100, 8000, make([]byte, 8000))
	if ch := w.chunk(); !ch.simple || ch.errno != 0 {
		t.Fatalf("write: %+v", ch)
	}

	c := dial(t, ts.sock)
	c.hello(nbdproto.FlagFixedNewstyle | nbdproto.FlagNoZeroes)
	c.option(nbdproto.OptStructuredReply, nil)
	c.reply(nbdproto.OptStructuredReply)
	c.metaReplies(nbdproto.OptSetMetaContext, metaData("bm", "qemu:dirty-bitmap:b1", "base:allocation", "qemu:dirty-bitmap:b0"))
	c.option(nbdproto.OptGo, append(str32("bm"), 0, 0))
	for typ, _ := c.reply(nbdproto.OptGo); typ != nbdproto.RepAck; typ, _ = c.reply(nbdproto.OptGo) {
	}
	extents := func(ch chunk) (uint32, []uint32) {
		var out []uint32
		for p := ch.data[4:]; len(p) >= 8; p = p[8:] {
			out = append(out, binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:]))
		}
		return binary.BigEndian.Uint32(ch.data), out
	}
	for _, tt := range []struct {
		flags    uint16
		off, len uint64
		want     map[uint32][]uint32
	}{
		{0, 0, 1 << 20, map[uint32][]uint32{0: {4096, 3, 8192, 0, 1<<20 - 12288, 3}, 2: {4096, 0, 8192, 1, 1<<20 - 12288, 0}, 3: {1 << 20, 0}}},
		{0, 6000, 10000, map[uint32][]uint32{0: {6288, 0, 3712, 3}, 2: {6288, 1, 3712, 0}, 3: {10000, 0}}},
		{nbdproto.CmdFlagReqOne, 0, 1 << 20, map[uint32][]uint32{0: {4096, 3}, 2: {4096, 0}, 3: {1 << 20, 0}}},
		{nbdproto.CmdFlagReqOne, 8192, 1 << 19, map[uint32][]uint32{0: {4096, 0}, 2: {4096, 1}, 3: {1 << 19, 0}}},
	} {
		c.request(nbdproto.CmdBlockStatus, tt.flags, 7, tt.off, uint32(tt.len), nil)
		var ids []uint32
		for i := 0; i < 3; i++ {
			ch := c.chunk()
			if ch.typ != nbdproto.ChunkBlockStatus || (ch.flags&nbdproto.ReplyFlagDone != 0) != (i == 2) {
				t.Fatalf("chunk %d: %+v", i, ch)
			}
			id, got := extents(ch)
			ids = append(ids, id)
			if !slices.Equal(got, tt.want[id]) {
				t.Errorf("block status %d+%d flags %d, context %d: %v, want %v", tt.off, tt.len, tt.flags, id, got, tt.want[id])
			}
		}
		if !slices.Equal(ids, []uint32{0, 2, 3}) {
			t.Errorf("context order %v", ids)
		}
	}
}

// TestMetaContextOtherExport: contexts set for one export count for
// nothing once the client goes into another (nbd_check_meta_export).
func TestMetaContextOtherExport(t *testing.T) {
	ts := newBitmapServer(t)
	c := dial(t, ts.sock)
	c.hello(nbdproto.FlagFixedNewstyle | nbdproto.FlagNoZeroes)
	c.option(nbdproto.OptStructuredReply, nil)
	c.reply(nbdproto.OptStructuredReply)
	c.metaReplies(nbdproto.OptSetMetaContext, metaData("disk", "base:allocation"))
	c.option(nbdproto.OptGo, append(str32("bm"), 0, 0))
	for typ, _ := c.reply(nbdproto.OptGo); typ != nbdproto.RepAck; typ, _ = c.reply(nbdproto.OptGo) {
	}
	c.request(nbdproto.CmdBlockStatus, 0, 1, 0, 4096, nil)
	if ch := c.chunk(); ch.typ != nbdproto.ChunkError || binary.BigEndian.Uint32(ch.data) != nbdproto.ErrInval {
		t.Errorf("block status with contexts of another export: %+v", ch)
	}
}

// TestExportHoldsBitmaps: exported bitmaps are busy until the export
// goes; then the monitor may remove them.
func TestExportHoldsBitmaps(t *testing.T) {
	ts := newBitmapServer(t)
	if err := ts.graph.Bitmaps(block.BitmapAction{Op: "remove", Node: "f", Name: "b1"}); err == nil || err.Error() != "Bitmap 'b1' is currently in use by another operation and cannot be used" {
		t.Fatalf("remove of an exported bitmap: %v", err)
	}
	if err := ts.table.Delete("bm", false); err != nil {
		t.Fatal(err)
	}
	if err := ts.graph.Bitmaps(block.BitmapAction{Op: "remove", Node: "f", Name: "b1"}); err != nil {
		t.Fatalf("remove once the export is gone: %v", err)
	}
}

// FuzzMetaContext: any LIST and SET meta context option data, then a
// block status request, on an export with bitmaps: a reply or a closed
// connection, never a panic or a hang.
func FuzzMetaContext(f *testing.F) {
	f.Add(metaData("bm"))
	f.Add(metaData("bm", "qemu:", "base:", "qemu:dirty-bitmap:"))
	f.Add(metaData("bm", "qemu:dirty-bitmap:b1", "base:allocation", "qemu:dirty-bitmap:b0\x00x"))
	f.Add(metaData("bm", string(make([]byte, nbdproto.MaxString+1))))
	f.Add(append(str32("bm"), 0, 0, 0, 9, 0, 0, 0, 200, 'q'))
	ts := newBitmapServer(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		p := binary.BigEndian.AppendUint32(nil, nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes)
		opt := func(o uint32, data []byte) {
			p = binary.BigEndian.AppendUint64(p, nbdproto.OptMagic)
			p = binary.BigEndian.AppendUint32(p, o)
			p = binary.BigEndian.AppendUint32(p, uint32(len(data)))
			p = append(p, data...)
		}
		opt(nbdproto.OptStructuredReply, nil)
		opt(nbdproto.OptListMetaContext, data)
		opt(nbdproto.OptSetMetaContext, data)
		opt(nbdproto.OptGo, append(str32("bm"), 0, 0))
		p = append(p, encodeRequest(nbdproto.CmdBlockStatus, 0, 1, 0, 1<<20, nil)...)
		p = append(p, encodeRequest(nbdproto.CmdBlockStatus, nbdproto.CmdFlagReqOne, 2, 4096, 100, nil)...)
		feed(t, ts.svc, p)
	})
}
