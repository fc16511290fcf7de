package nbd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"minivmm/block"
	"minivmm/block/nbdproto"
)

// Meta contexts: what NBD_OPT_LIST_META_CONTEXT offers and
// NBD_OPT_SET_META_CONTEXT selects of an export (base:allocation,
// qemu:allocation-depth, and qemu:dirty-bitmap:NAME for each of its
// bitmaps=), and the block status replies they give, as QEMU 7.2's
// nbd/server.c does.

// metaContexts is a selection of an export's contexts.
type metaContexts struct {
	exp     *nbdExport // the export it was made for
	base    bool       // base:allocation
	depth   bool       // qemu:allocation-depth
	bitmaps []bool     // qemu:dirty-bitmap:NAME, by the export's bitmaps
}

// any tells whether block status has something to report on exp: a
// selection made for another export than the one the client went on to
// choose counts for nothing (nbd_check_meta_export).
func (m *metaContexts) any(exp *nbdExport) bool {
	if m.exp == nil || m.exp != exp {
		return false
	}
	if m.base || m.depth {
		return true
	}
	for _, b := range m.bitmaps {
		if b {
			return true
		}
	}
	return false
}

// query marks what one query names (nbd_meta_base_query and
// nbd_meta_qemu_query); list: the option is a LIST, where an empty
// leaf matches every context under its prefix.
func (m *metaContexts) query(q string, list bool) {
	e := m.exp
	if rest, ok := strings.CutPrefix(q, "base:"); ok {
		if rest == "allocation" || list && rest == "" {
			m.base = true
		}
		return
	}
	rest, ok := strings.CutPrefix(q, "qemu:")
	if !ok {
		return
	}
	switch {
	case rest == "":
		if list {
			m.depth = e.allocDepth
			m.all()
		}
	case rest == "allocation-depth":
		m.depth = e.allocDepth
	case strings.HasPrefix(rest, "dirty-bitmap:"):
		name := strings.TrimPrefix(rest, "dirty-bitmap:")
		if name == "" {
			if list {
				m.all()
			}
			return
		}
		for i, b := range e.bitmaps {
			if b.Name() == name {
				m.bitmaps[i] = true
				return
			}
		}
	}
}

func (m *metaContexts) all() {
	for i := range m.bitmaps {
		m.bitmaps[i] = true
	}
}

// optMeta answers NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT
// (nbd_negotiate_meta_queries).
func (c *conn) optMeta(opt uint32, data []byte) error {
	list := opt == nbdproto.OptListMetaContext
	if !list && !c.structured {
		return c.optError(opt, nbdproto.RepErrInvalid, "request option 'set meta context' when structured reply is not negotiated")
	}
	if !list {
		// A SET forgets the last selection whatever becomes of it.
		c.meta = metaContexts{}
	}
	// QEMU's words for what it cannot parse (nbd_opt_read and
	// nbd_opt_read_name); it reads each query as it goes, so the first
	// fault is the reply.
	what := "list meta context"
	if !list {
		what = "set meta context"
	}
	inconsistent := func() error {
		return c.optError(opt, nbdproto.RepErrInvalid, "Inconsistent lengths in option "+what)
	}
	embeddedNUL := func() error {
		return c.optError(opt, nbdproto.RepErrInvalid, "Unexpected embedded NUL in option "+what)
	}
	if len(data) < 4 {
		return inconsistent()
	}
	l := binary.BigEndian.Uint32(data)
	rest := data[4:]
	if l > nbdproto.MaxString {
		return c.optError(opt, nbdproto.RepErrInvalid, fmt.Sprintf("Invalid name length: %d", l))
	}
	if uint64(l) > uint64(len(rest)) {
		return inconsistent()
	}
	name := string(rest[:l])
	rest = rest[l:]
	if strings.IndexByte(name, 0) >= 0 {
		return embeddedNUL()
	}
	e := c.svc.lookup(name)
	if e == nil {
		return c.optError(opt, nbdproto.RepErrUnknown, fmt.Sprintf("export '%s' not present", name))
	}
	m := metaContexts{exp: e, bitmaps: make([]bool, len(e.bitmaps))}
	if len(rest) < 4 {
		return inconsistent()
	}
	n := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	if n == 0 && list {
		m.base, m.depth = true, e.allocDepth
		m.all()
	}
	for i := uint32(0); i < n; i++ {
		if len(rest) < 4 {
			return inconsistent()
		}
		l := binary.BigEndian.Uint32(rest)
		rest = rest[4:]
		if uint64(l) > uint64(len(rest)) {
			return inconsistent()
		}
		q := rest[:l]
		rest = rest[l:]
		// A query longer than any context is skipped, as QEMU does.
		if l > nbdproto.MaxString {
			continue
		}
		if bytes.IndexByte(q, 0) >= 0 {
			return embeddedNUL()
		}
		m.query(string(q), list)
	}
	if len(rest) != 0 {
		// QEMU would read these bytes as the next option, lose the
		// stream and hang up; refusing the option keeps the client.
		return c.optError(opt, nbdproto.RepErrInvalid, "Data length mismatch")
	}
	send := func(id uint32, ctx string) error {
		if list {
			id = 0 // ids mean nothing in a list
		}
		p := binary.BigEndian.AppendUint32(nil, id)
		return c.optReply(opt, nbdproto.RepMetaContext, append(p, ctx...))
	}
	if m.base {
		if err := send(metaBaseAllocation, nbdproto.CtxBaseAllocation); err != nil {
			return err
		}
	}
	if m.depth {
		if err := send(metaAllocationDepth, nbdproto.CtxAllocationDepth); err != nil {
			return err
		}
	}
	for i, on := range m.bitmaps {
		if on {
			if err := send(metaDirtyBitmap+uint32(i), nbdproto.CtxDirtyBitmap+e.bitmaps[i].Name()); err != nil {
				return err
			}
		}
	}
	if err := c.optReply(opt, nbdproto.RepAck, nil); err != nil {
		return err
	}
	if !list {
		c.meta = m
	}
	return nil
}

// extents collects one context's block status reply: runs of one flags
// value, merged where they meet, at most max of them.
type extents struct {
	p     []byte // context id, then (length, flags) pairs
	n     int
	max   int
	flags uint32
}

func newExtents(id uint32, max int) *extents {
	return &extents{p: binary.BigEndian.AppendUint32(nil, id), max: max}
}

// add appends a run, or lengthens the last one if it has the same flags
// (nbd_extent_array_add); false once full.
func (x *extents) add(length uint64, flags uint32) bool {
	if length == 0 {
		return true
	}
	if x.n > 0 && flags == x.flags {
		l := binary.BigEndian.Uint32(x.p[len(x.p)-8:])
		if uint64(l)+length <= 0xffffffff {
			binary.BigEndian.PutUint32(x.p[len(x.p)-8:], l+uint32(length))
			return true
		}
	}
	if x.n == x.max {
		return false
	}
	x.p = binary.BigEndian.AppendUint32(x.p, uint32(length))
	x.p = binary.BigEndian.AppendUint32(x.p, flags)
	x.n++
	x.flags = flags
	return true
}

// blockStatus answers NBD_CMD_BLOCK_STATUS: one chunk of extents per
// meta context the client selected, in QEMU's order (base:allocation,
// qemu:allocation-depth, then the bitmaps), the last one flagged done.
func (c *conn) blockStatus(rq *request) {
	m := &c.meta
	max := maxExtents
	if rq.flags&nbdproto.CmdFlagReqOne != 0 {
		max = 1
	}
	var chunks []*extents
	if m.base {
		x, err := c.chainStatus(rq, newExtents(metaBaseAllocation, max), func(st block.ChainStatus) uint32 {
			var f uint32
			if !st.Data {
				f |= nbdproto.StateHole
			}
			if st.Zero {
				f |= nbdproto.StateZero
			}
			return f
		})
		if err != nil {
			c.replyError(rq, err)
			return
		}
		chunks = append(chunks, x)
	}
	if m.depth {
		x, err := c.chainStatus(rq, newExtents(metaAllocationDepth, max), func(st block.ChainStatus) uint32 {
			if !st.Present {
				return 0
			}
			return uint32(st.Depth + 1)
		})
		if err != nil {
			c.replyError(rq, err)
			return
		}
		chunks = append(chunks, x)
	}
	for i, on := range m.bitmaps {
		if on {
			chunks = append(chunks, bitmapExtents(c.exp.bitmaps[i], rq, newExtents(metaDirtyBitmap+uint32(i), max)))
		}
	}
	out := make([][]byte, 0, 2*len(chunks))
	for i, x := range chunks {
		var flags uint16
		if i == len(chunks)-1 {
			flags = nbdproto.ReplyFlagDone
		}
		out = append(out, chunkHeader(flags, nbdproto.ChunkBlockStatus, rq.handle, len(x.p)), x.p)
	}
	c.send(out...)
}

// chainStatus fills x from the export's chain, flags as f makes them of
// each status.
func (c *conn) chainStatus(rq *request, x *extents, f func(block.ChainStatus) uint32) (*extents, error) {
	node := c.exp.backend.Node()
	end := rq.off + uint64(rq.length)
	for off := rq.off; off < end; {
		st, n, err := block.StatusAbove(node, nil, int64(off), int64(end-off))
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			n = int64(end - off)
		}
		if !x.add(uint64(n), f(st)) {
			break
		}
		off += uint64(n)
	}
	return x, nil
}

// bitmapExtents fills x from a dirty bitmap (bitmap_to_extents): dirty
// runs flagged NBD_STATE_DIRTY, the clean ones between them 0.
func bitmapExtents(b *block.DirtyBitmap, rq *request, x *extents) *extents {
	start := int64(rq.off)
	end := start + int64(rq.length)
	for {
		ds, n, ok := b.NextDirtyArea(start, end)
		if !ok {
			break
		}
		if !x.add(uint64(ds-start), 0) || !x.add(uint64(n), nbdproto.StateDirty) {
			return x
		}
		start = ds + n
	}
	x.add(uint64(end-start), 0)
	return x
}
