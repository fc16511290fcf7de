package block

import (
	"errors"
	"math"
)

// Requests that do not fit a node's limits (limits.go), as QEMU's
// block/io.c handles them: reads widened to the request alignment and
// trimmed, writes as a read-modify-write of the head and tail blocks,
// long requests split at the transfer limit. An aligned request that
// fits takes none of this (write in vector.go, ReadAt in node.go).

// alignDown and alignUp round to a multiple of a, which need not be a
// power of two: discard and write-zeroes alignments (blkdebug's
// opt-discard=15M, iotest 177) are not, and a mask would round 15M down
// to 1M.
func alignDown(x, a int64) int64 { return x - x%a }
func alignUp(x, a int64) int64   { return alignDown(x+a-1, a) }

// misaligned says whether [off, off+length) needs padding.
func (l *Limits) misaligned(off, length int64) bool {
	a := l.RequestAlignment
	return a > 1 && (off|length)&(a-1) != 0
}

// slowRead: padding or splitting needed.
func (l *Limits) slowRead(off, length int64) bool {
	return l.misaligned(off, length) || l.MaxTransfer != 0 && length > l.MaxTransfer
}

// maxTransfer is QEMU's per-request transfer cap, aligned.
func (l *Limits) maxTransfer() int64 {
	return alignDown(minNonZero(l.MaxTransfer, math.MaxInt32), l.RequestAlignment)
}

// sliceVec is bytes [pos, pos+n) of bufs, as a list sharing their memory.
func sliceVec(bufs [][]byte, pos, n int64) [][]byte {
	var out [][]byte
	for _, b := range bufs {
		if n == 0 {
			break
		}
		if pos >= int64(len(b)) {
			pos -= int64(len(b))
			continue
		}
		k := min(int64(len(b))-pos, n)
		out = append(out, b[pos:pos+k])
		pos, n = 0, n-k
	}
	return out
}

func clearVec(bufs [][]byte) {
	for _, b := range bufs {
		clear(b)
	}
}

// eventHere tells n's own driver, if it is a blkdebug, that the generic
// layer reached event name on n (QEMU's bdrv_debug_event on the node
// itself, which, unlike a format's events, goes no further down).
func (n *Node) eventHere(name string) {
	if n.sink != nil {
		n.sink.Event(name)
	}
}

// readSlow is a read that needs padding or splitting (QEMU's
// bdrv_co_preadv_part with bdrv_pad_request). The request was checked.
func (n *Node) readSlow(bufs [][]byte, off int64) (int, error) {
	length := vlen(bufs)
	if err := n.gate.enter(); err != nil {
		return 0, n.fail("read", off, length, err)
	}
	defer n.gate.leave()
	n.mu.RLock()
	defer n.mu.RUnlock()
	l := n.limitsNow()
	a := l.RequestAlignment
	start, end := alignDown(off, a), alignUp(off+length, a)
	vec := bufs
	if start != off || end != off+length {
		vec = make([][]byte, 0, len(bufs)+2)
		if start < off {
			vec = append(vec, make([]byte, off-start))
		}
		vec = append(vec, bufs...)
		if end > off+length {
			vec = append(vec, make([]byte, end-off-length))
		}
	}
	if err := n.readAlignedLocked(vec, start, end-start, l); err != nil {
		return 0, n.fail("read", off, length, err)
	}
	return int(length), nil
}

// readAlignedLocked is QEMU's bdrv_aligned_preadv: an aligned read in
// pieces of at most the transfer limit, zeroes past the end of the node.
// QEMU lets the driver read up to the aligned end past EOF (its child
// fills zeroes); here the driver's part stops at the node's end, which
// its children accept, and the generic layer fills the rest.
func (n *Node) readAlignedLocked(bufs [][]byte, off, length int64, l *Limits) error {
	maxBytes := max(0, n.length.Load()-off)
	maxT := l.maxTransfer()
	if length <= maxBytes && length <= maxT {
		_, err := n.readVLocked(bufs, off)
		return err
	}
	for pos := int64(0); pos < length; {
		if maxBytes == 0 {
			clearVec(sliceVec(bufs, pos, length-pos))
			return nil
		}
		num := min(length-pos, maxBytes, maxT)
		if _, err := n.readVLocked(sliceVec(bufs, pos, num), off+pos); err != nil {
			return err
		}
		maxBytes -= num
		pos += num
	}
	return nil
}

// writePadded is an unaligned write (zero: of zeroes) as QEMU's
// bdrv_co_pwritev_part and bdrv_co_do_zero_pwritev do it: the request
// widened to the alignment becomes serialising, the head and tail blocks
// are read (firing pwritev_rmw_* on the node) and written back around
// the data. Where QEMU ignores a failed read and writes what its buffer
// held over the neighbouring bytes, this fails the write untouched.
// ok is false when a reopen changed the node's alignment while the
// request waited: nothing was done, the caller starts over.
func (n *Node) writePadded(bufs [][]byte, off, length int64, flags WriteFlags, zero, unmap bool) (c int, ok bool, err error) {
	op := "write"
	if zero {
		op = "write-zeroes"
	}
	a := n.limitsNow().RequestAlignment
	start, end := alignDown(off, a), alignUp(off+length, a)
	var held serialRange
	if flags&Serialised != 0 {
		held = serialRange{off, off + length}
	}
	flags &^= Serialised
	defer n.serial.serialiseRMW(start, end, held)()
	if err := n.gate.enter(); err != nil {
		return 0, true, n.fail(op, off, length, err)
	}
	defer n.gate.leave()
	n.mu.RLock()
	defer n.mu.RUnlock()
	l := n.limitsNow()
	if l.RequestAlignment != a {
		return 0, false, nil
	}
	defer n.writeDone()
	defer n.markDirty(start, end-start)
	head, tail := off-start, end-off-length
	bufLen := a
	if head > 0 && tail > 0 && end-start > a {
		bufLen = 2 * a
	}
	merge := end-start == bufLen
	buf := make([]byte, bufLen)
	if err := n.rmwReadLocked(buf, start, end, head, tail, merge, l); err != nil {
		return 0, true, n.fail(op, off, length, err)
	}
	if zero {
		clear(buf[head : bufLen-tail])
		err = n.zeroPaddedLocked(buf, start, off+length, head, merge, flags, unmap, l)
	} else {
		vec := make([][]byte, 0, len(bufs)+2)
		if head > 0 {
			vec = append(vec, buf[:head])
		}
		vec = append(vec, bufs...)
		if tail > 0 {
			vec = append(vec, buf[bufLen-tail:])
		}
		// The padding of a node whose size is not aligned (allowed to a
		// user that may resize) stops at its end: QEMU writes it past
		// the end and grows the file; here the size stays.
		wlen := min(end, max(n.length.Load(), off+length)) - start
		_, err = n.alignedWriteLocked(nil, sliceVec(vec, 0, wlen), start, wlen, flags)
	}
	if err != nil {
		return 0, true, n.fail(op, off, length, err)
	}
	return int(length), true, nil
}

// rmwReadLocked is QEMU's bdrv_padding_rmw_read: the head block (or, for
// a request within one or two blocks, all of them at once) and then the
// tail block, each between its events.
func (n *Node) rmwReadLocked(buf []byte, start, end, head, tail int64, merge bool, l *Limits) error {
	a := l.RequestAlignment
	bufLen := int64(len(buf))
	if head > 0 || merge {
		rlen := a
		if merge {
			rlen = bufLen
		}
		if head > 0 {
			n.eventHere("pwritev_rmw_head")
		}
		if merge && tail > 0 {
			n.eventHere("pwritev_rmw_tail")
		}
		if err := n.readAlignedLocked([][]byte{buf[:rlen]}, start, rlen, l); err != nil {
			return err
		}
		if head > 0 {
			n.eventHere("pwritev_rmw_after_head")
		}
		if merge && tail > 0 {
			n.eventHere("pwritev_rmw_after_tail")
		}
		if merge {
			return nil
		}
	}
	if tail > 0 {
		n.eventHere("pwritev_rmw_tail")
		if err := n.readAlignedLocked([][]byte{buf[bufLen-a:]}, end-a, a, l); err != nil {
			return err
		}
		n.eventHere("pwritev_rmw_after_tail")
	}
	return nil
}

// zeroPaddedLocked writes an unaligned zero request once its head and
// tail blocks are read and zeroed where the request covers them: those
// blocks as data, the aligned middle as zeroes (QEMU's
// bdrv_co_do_zero_pwritev).
// end is the request's end, not aligned.
func (n *Node) zeroPaddedLocked(buf []byte, start, end, head int64, merge bool, flags WriteFlags, unmap bool, l *Limits) error {
	a := l.RequestAlignment
	off := start
	if head > 0 || merge {
		wlen := a
		if merge {
			wlen = int64(len(buf))
		}
		if _, err := n.alignedWriteLocked(buf[:wlen], nil, start, wlen, flags); err != nil || merge {
			return err
		}
		off = start + wlen
	}
	if mid := alignDown(end-off, a); mid > 0 {
		if err := n.alignedZeroLocked(off, mid, unmap, flags); err != nil {
			return err
		}
		off += mid
	}
	if off < end {
		_, err := n.alignedWriteLocked(buf[int64(len(buf))-a:], nil, off, a, flags)
		return err
	}
	return nil
}

// alignedZeroLocked is QEMU's bdrv_aligned_pwritev with
// BDRV_REQ_ZERO_WRITE.
// Unmapping needs the node's discard=unmap (QEMU's BDRV_O_UNMAP).
func (n *Node) alignedZeroLocked(off, length int64, unmap bool, flags WriteFlags) error {
	n.eventHere("pwritev_zero")
	err := n.zeroesLocked(off, length, unmap && n.state.discard == "unmap")
	n.eventHere("pwritev_done")
	if err == nil && flags&FUA != 0 && !n.state.noFlush {
		err = n.img.Flush()
	}
	return err
}

// maxBounce is QEMU's MAX_BOUNCE_BUFFER: the longest zero write that
// falls back to writing a buffer of zeroes at once.
const maxBounce = 32768 << 9

// zeroesLocked is QEMU's bdrv_co_do_pwrite_zeroes: the range split at
// the zero alignment (the unaligned head and tail apart, so a driver can
// refuse them) and the zero limit; what the driver cannot zero is
// written from a buffer of zeroes.
func (n *Node) zeroesLocked(off, length int64, unmap bool) error {
	l := n.limitsNow()
	align := max(l.PwriteZeroesAlignment, l.RequestAlignment)
	maxZero := alignDown(minNonZero(l.MaxPwriteZeroes, math.MaxInt64), align)
	maxT := minNonZero(l.MaxTransfer, maxBounce)
	head, tail := off%align, (off+length)%align
	zw, _ := n.img.(ZeroWriter)
	for length > 0 {
		num := length
		if head != 0 {
			num = min(length, maxT, align-head)
			head = (head + num) % align
		} else if tail != 0 && num > align {
			num -= tail
		}
		num = min(num, maxZero)
		err := ErrNotSupported
		if zw != nil {
			err = zw.WriteZeroes(off, num, unmap)
		}
		if errors.Is(err, ErrNotSupported) {
			num = min(num, maxT)
			err = n.writeZeroBufLocked(off, num)
		}
		if err != nil {
			return err
		}
		off += num
		length -= num
	}
	return nil
}

func (n *Node) writeZeroBufLocked(off, length int64) error {
	for length > 0 {
		chunk := min(length, int64(len(zeroBuf)))
		if _, err := n.img.WriteAt(zeroBuf[:chunk], off); err != nil {
			return err
		}
		off += chunk
		length -= chunk
	}
	return nil
}

// discardLocked is QEMU's bdrv_co_pdiscard past its checks: the range
// split at the discard alignment and limit, the unaligned head and tail
// apart (a driver may drop them: ErrNotSupported is no failure).
func (n *Node) discardLocked(d Discarder, off, length int64) error {
	l := n.limitsNow()
	ra := l.RequestAlignment
	align := max(l.PdiscardAlignment, ra)
	maxDiscard := alignDown(minNonZero(l.MaxPdiscard, math.MaxInt64), align)
	head, tail := off%align, (off+length)%align
	for length > 0 {
		num := length
		if head != 0 {
			num = min(length, align-head)
			if num%ra != 0 {
				num %= ra
			}
			head = (head + num) % align
		} else if tail != 0 {
			if num > align {
				num -= tail
			} else if tail%ra != 0 && tail > ra {
				tail %= ra
				num -= tail
			}
		}
		num = min(num, maxDiscard)
		if err := d.Discard(off, num); err != nil && !errors.Is(err, ErrNotSupported) {
			return err
		}
		off += num
		length -= num
	}
	return nil
}
