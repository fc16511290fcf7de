package block

// WriteFlags modify a write request.
type WriteFlags uint

// FUA (force unit access): the write is durable when it completes, as if
// a flush followed it, but without flushing other writes.
const FUA WriteFlags = 1 << iota

// VectorReader reads into a list of buffers (slices of guest memory) at
// off, as one request; a driver that can do it natively (preadv) says so
// by implementing it, the graph falls back to one ReadAt per buffer.
type VectorReader interface {
	ReadV(bufs [][]byte, off int64) (int, error)
}

// VectorWriter writes a list of buffers at off as one request. flags may
// hold FUA; a driver that cannot honour FUA itself returns
// ErrNotSupported for it, and the graph flushes the node after the write.
type VectorWriter interface {
	WriteV(bufs [][]byte, off int64, flags WriteFlags) (int, error)
}

func vlen(bufs [][]byte) int64 {
	var n int64
	for _, b := range bufs {
		n += int64(len(b))
	}
	return n
}

// ReadV reads len(bufs[0])+len(bufs[1])+... bytes at off into bufs, in
// order; a short read is an error.
func (n *Node) ReadV(bufs [][]byte, off int64) (int, error) {
	length := vlen(bufs)
	if err := n.check("read", off, length); err != nil {
		return 0, err
	}
	if n.limited.Load() && n.limitsNow().slowRead(off, length) {
		return n.readSlow(bufs, off)
	}
	if err := n.gate.enter(); err != nil {
		return 0, n.fail("read", off, length, err)
	}
	defer n.gate.leave()
	n.mu.RLock()
	c, err := n.readVLocked(bufs, off)
	n.mu.RUnlock()
	if err != nil {
		return c, n.fail("read", off, length, err)
	}
	return c, nil
}

func (n *Node) readVLocked(bufs [][]byte, off int64) (int, error) {
	if len(bufs) == 1 {
		return n.img.ReadAt(bufs[0], off)
	}
	if vr, ok := n.img.(VectorReader); ok {
		return vr.ReadV(bufs, off)
	}
	if n.aligns() {
		// One request, as the driver declared it must get them: the
		// buffers' own edges need not fall on its alignment.
		buf := make([]byte, vlen(bufs))
		c, err := n.img.ReadAt(buf, off)
		scatterV(bufs, buf)
		return c, err
	}
	done := 0
	for _, b := range bufs {
		c, err := n.img.ReadAt(b, off)
		done += c
		if err != nil {
			return done, err
		}
		off += int64(len(b))
	}
	return done, nil
}

// WriteV writes bufs, in order, at off; with FUA the data is durable when
// WriteV returns. The caller must hold write permission.
func (n *Node) WriteV(bufs [][]byte, off int64, flags WriteFlags) (int, error) {
	if len(bufs) == 1 {
		return n.write(bufs[0], nil, off, flags)
	}
	return n.write(nil, bufs, off, flags)
}

// write is one write request: of p, or where p is nil, of bufs (kept
// apart so that a plain WriteAt allocates no list).
func (n *Node) write(p []byte, bufs [][]byte, off int64, flags WriteFlags) (int, error) {
	length := int64(len(p))
	if bufs != nil {
		length = vlen(bufs)
	}
	if err := n.checkWrite("write", off, length); err != nil {
		return 0, err
	}
	if n.limited.Load() && n.limitsNow().misaligned(off, length) {
		if bufs == nil {
			bufs = [][]byte{p}
		}
		if c, ok, err := n.writePadded(bufs, off, length, flags, false, false); ok {
			return c, err
		}
		return n.write(nil, bufs, off, flags)
	}
	if flags&Serialised == 0 {
		defer n.serial.writeBegin(off, length)()
	}
	flags &^= Serialised
	if err := n.gate.enter(); err != nil {
		return 0, n.fail("write", off, length, err)
	}
	defer n.gate.leave()
	defer n.writeDone()
	defer n.markDirty(off, length)
	n.mu.RLock()
	defer n.mu.RUnlock()
	c, err := n.alignedWriteLocked(p, bufs, off, length, flags)
	if err != nil {
		return c, n.fail("write", off, length, err)
	}
	return c, nil
}

// alignedWriteLocked is QEMU's bdrv_aligned_pwritev: a write that fits
// the node's alignment, as zeroes where detect-zeroes finds them, split
// at the transfer limit, between the pwritev events.
func (n *Node) alignedWriteLocked(p []byte, bufs [][]byte, off, length int64, flags WriteFlags) (int, error) {
	detect, unmap := n.state.detectZeroes, n.state.discard == "unmap" && n.state.detectZeroes == "unmap"
	if detect != "off" && (bufs == nil && allZero(p) || bufs != nil && allZeroV(bufs)) {
		if err := n.alignedZeroLocked(off, length, unmap, flags); err != nil {
			return 0, err
		}
		return int(length), nil
	}
	var c int
	var err error
	fuaDone := false
	n.eventHere("pwritev")
	if n.limited.Load() && n.limitsNow().MaxTransfer != 0 && length > n.limitsNow().MaxTransfer {
		if bufs == nil {
			bufs = [][]byte{p}
		}
		c, err = n.splitWriteLocked(bufs, off, length, flags)
	} else if bufs == nil && flags&FUA == 0 {
		c, err = n.img.WriteAt(p, off)
	} else {
		if bufs == nil {
			bufs = [][]byte{p}
		}
		c, fuaDone, err = n.writeVLocked(bufs, off, flags)
	}
	n.eventHere("pwritev_done")
	if err == nil && flags&FUA != 0 && !fuaDone && !n.state.noFlush {
		// The driver cannot force this write alone: flush it all, as
		// QEMU does for a driver without BDRV_REQ_FUA.
		err = n.img.Flush()
	}
	return c, err
}

// splitWriteLocked writes in pieces of at most the transfer limit; FUA,
// if asked, is left to the caller's flush after the last.
func (n *Node) splitWriteLocked(bufs [][]byte, off, length int64, flags WriteFlags) (int, error) {
	maxT := n.limitsNow().maxTransfer()
	done := 0
	for pos := int64(0); pos < length; {
		num := min(length-pos, maxT)
		c, _, err := n.writeVLocked(sliceVec(bufs, pos, num), off+pos, flags&^FUA)
		done += c
		if err != nil {
			return done, err
		}
		pos += num
	}
	return done, nil
}

// writeVLocked writes with the driver's WriteV where it has one; fuaDone
// says the driver honoured FUA itself.
func (n *Node) writeVLocked(bufs [][]byte, off int64, flags WriteFlags) (c int, fuaDone bool, err error) {
	if vw, ok := n.img.(VectorWriter); ok {
		wflags := flags
		if n.state.noFlush {
			wflags &^= FUA
		}
		c, err = vw.WriteV(bufs, off, wflags)
		if err != ErrNotSupported {
			return c, true, err
		}
		if c, err = vw.WriteV(bufs, off, wflags&^FUA); err != ErrNotSupported {
			return c, false, err
		}
	}
	if len(bufs) > 1 && n.aligns() {
		buf := make([]byte, 0, vlen(bufs))
		for _, b := range bufs {
			buf = append(buf, b...)
		}
		c, err = n.img.WriteAt(buf, off)
		return c, false, err
	}
	for _, b := range bufs {
		k, err := n.img.WriteAt(b, off)
		c += k
		if err != nil {
			return c, false, err
		}
		off += int64(len(b))
	}
	return c, false, nil
}

// aligns says whether the node has a request alignment its driver relies
// on.
func (n *Node) aligns() bool { return n.limited.Load() && n.limitsNow().RequestAlignment > 1 }

func scatterV(bufs [][]byte, p []byte) {
	for _, b := range bufs {
		p = p[copy(b, p):]
	}
}

func allZeroV(bufs [][]byte) bool {
	for _, b := range bufs {
		if !allZero(b) {
			return false
		}
	}
	return true
}
