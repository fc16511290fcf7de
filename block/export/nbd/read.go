package nbd

import (
	"encoding/binary"
	"sync"

	"minivmm/block"
	"minivmm/block/nbdproto"
)

// read answers NBD_CMD_READ: the data in one piece, or with structured
// replies and no DF flag, as data and hole chunks by the chain's block
// status (nbd_co_send_sparse_read), so that zeroes cross no wire.
func (c *conn) read(rq *request) {
	if rq.length == 0 {
		c.replyOK(rq)
		return
	}
	// A small read is sent whole: asking the chain where its holes are
	// costs more than the zeroes would on the wire.
	if !c.structured || rq.flags&nbdproto.CmdFlagDF != 0 || rq.length < sparseReadMin {
		buf := c.svc.bufs.get(int(rq.length))
		defer c.svc.bufs.put(buf)
		if _, err := c.exp.backend.ReadV([][]byte{buf}, int64(rq.off)); err != nil {
			c.replyError(rq, err)
			return
		}
		if !c.structured {
			c.send(simpleHeader(0, rq.handle), buf)
			return
		}
		c.send(chunkHeader(nbdproto.ReplyFlagDone, nbdproto.ChunkOffsetData, rq.handle, 8+len(buf)), binary.BigEndian.AppendUint64(nil, rq.off), buf)
		return
	}
	var out [][]byte
	var bufs [][]byte
	defer func() {
		for _, b := range bufs {
			c.svc.bufs.put(b)
		}
	}()
	node := c.exp.backend.Node()
	end := rq.off + uint64(rq.length)
	for off := rq.off; off < end; {
		st, n, err := block.StatusAbove(node, nil, int64(off), int64(end-off))
		if err == nil && n <= 0 {
			st, n = block.ChainStatus{Data: true}, int64(end-off)
		}
		if err != nil {
			c.replyError(rq, err)
			return
		}
		var flags uint16
		if off+uint64(n) == end {
			flags = nbdproto.ReplyFlagDone
		}
		if st.Zero {
			p := binary.BigEndian.AppendUint64(nil, off)
			p = binary.BigEndian.AppendUint32(p, uint32(n))
			out = append(out, chunkHeader(flags, nbdproto.ChunkOffsetHole, rq.handle, len(p)), p)
		} else {
			buf := c.svc.bufs.get(int(n))
			bufs = append(bufs, buf)
			if _, err := c.exp.backend.ReadV([][]byte{buf}, int64(off)); err != nil {
				c.replyError(rq, err)
				return
			}
			out = append(out, chunkHeader(flags, nbdproto.ChunkOffsetData, rq.handle, 8+len(buf)), binary.BigEndian.AppendUint64(nil, off), buf)
		}
		off += uint64(n)
	}
	c.send(out...)
}

// sparseReadMin is the smallest read sent as data and hole chunks.
const sparseReadMin = 64 << 10

// bufPool holds payload buffers by power-of-two size class, so that a
// stream of 4 KiB requests allocates nothing.
type bufPool [26]sync.Pool // 1<<0 .. 1<<25 (32 MiB)

func class(n int) int {
	c := 0
	for 1<<c < n {
		c++
	}
	return c
}

func (pools *bufPool) get(n int) []byte {
	if n == 0 {
		return nil
	}
	c := class(n)
	if p, ok := pools[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<c)
}

func (pools *bufPool) put(b []byte) {
	if cap(b) == 0 {
		return
	}
	c := class(cap(b))
	if 1<<c != cap(b) {
		return
	}
	b = b[:cap(b)]
	pools[c].Put(&b)
}
