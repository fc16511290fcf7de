package virtioblk

import (
	"encoding/binary"
	"errors"
	"fmt"

	"minivmm/block"
	"minivmm/vm/virtq"
)

// Request types (virtio 1.x 5.2.6).
const (
	TypeIn          = 0
	TypeOut         = 1
	TypeFlush       = 4
	TypeGetID       = 8
	TypeGetLifetime = 10
	TypeDiscard     = 11
	TypeWriteZeroes = 13
	typeBarrier     = 0x80000000 // legacy; ignored, as QEMU does
)

// Status bytes.
const (
	StatusOK     = 0
	StatusIOErr  = 1
	StatusUnsupp = 2
)

// FlagUnmap is VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP.
const FlagUnmap = 1

const (
	headerSize  = 16 // struct virtio_blk_outhdr
	segmentSize = 16 // struct virtio_blk_discard_write_zeroes
)

// ErrBadRequest is a chain that is not a virtio-blk request (no header,
// no status byte): the device needs a reset (QEMU's virtio_error).
var ErrBadRequest = errors.New("virtio-blk: malformed request")

// request is a chain and what parse found in it.
type request struct {
	chain  virtq.Chain
	typ    uint32
	sector uint64
	// out: the device-readable bytes after the header; in: the
	// device-writable ones before the status byte.
	out, in [][]byte
	status  *byte
	inLen   uint32 // what the used element reports: every writable byte
}

// reset drops every reference into guest memory, keeping the lists.
func (r *request) reset() *request {
	// Only the lengths were used (PopInto truncates before it appends).
	clear(r.chain.Out)
	clear(r.chain.In)
	*r = request{chain: virtq.Chain{Out: r.chain.Out[:0], In: r.chain.In[:0]}}
	return r
}

// parseRequest parses a chain (its lists are reused).
func parseRequest(c *virtq.Chain) (request, error) {
	r := request{chain: *c}
	err := r.parse()
	*c = r.chain
	return r, err
}

// parse splits the chain into header, payload and status byte, as QEMU's
// virtio_blk_handle_request: a chain without both is malformed.
func (r *request) parse() error {
	c := &r.chain
	if len(c.Out) == 0 || len(c.In) == 0 {
		return fmt.Errorf("%w: missing headers (%d readable, %d writable buffers)", ErrBadRequest, len(c.Out), len(c.In))
	}
	var hdr [headerSize]byte
	out, n := consume(c.Out, hdr[:])
	if n < headerSize {
		return fmt.Errorf("%w: request header of %d bytes, want %d", ErrBadRequest, n, headerSize)
	}
	r.typ = binary.LittleEndian.Uint32(hdr[0:])
	r.sector = binary.LittleEndian.Uint64(hdr[8:])
	r.out = out
	total := 0
	for _, b := range c.In {
		total += len(b)
	}
	if total > 1<<32-1 {
		return fmt.Errorf("%w: %d writable bytes", ErrBadRequest, total)
	}
	last := c.In[len(c.In)-1]
	if len(last) == 0 {
		return fmt.Errorf("%w: status buffer is empty", ErrBadRequest)
	}
	r.inLen = uint32(total)
	r.status = &last[len(last)-1]
	r.in = c.In
	if len(last) == 1 {
		r.in = r.in[:len(r.in)-1]
	} else {
		r.in[len(r.in)-1] = last[:len(last)-1]
	}
	return nil
}

// consume copies the front of bufs into p and returns what is left after
// it (dropping emptied buffers) and how many bytes it copied.
func consume(bufs [][]byte, p []byte) ([][]byte, int) {
	n := 0
	for len(bufs) > 0 && n < len(p) {
		k := copy(p[n:], bufs[0])
		n += k
		if k == len(bufs[0]) {
			bufs = bufs[1:]
		} else {
			bufs[0] = bufs[0][k:]
		}
	}
	return bufs, n
}

func size(bufs [][]byte) uint64 {
	var n uint64
	for _, b := range bufs {
		n += uint64(len(b))
	}
	return n
}

// rangeOK is QEMU's virtio_blk_sect_range_ok: whole sectors, not too
// many, aligned to the logical block, inside the disk.
func (d *Device) rangeOK(sector, bytes uint64) bool {
	if bytes%sectorSize != 0 {
		return false
	}
	nb := bytes / sectorSize
	if nb > maxRequestSectors {
		return false
	}
	total := uint64(d.disk.Length()) / sectorSize
	if sector > total || nb > total-sector {
		return false
	}
	return (sector*sectorSize)%uint64(d.cfg.LogicalBlockSize) == 0
}

// execute serves a request and returns its status byte.
func (d *Device) execute(r *request) byte {
	switch r.typ &^ typeBarrier {
	case TypeIn, TypeOut:
		write := r.typ&TypeOut != 0
		if write && d.cfg.ReadOnly {
			return StatusIOErr
		}
		bufs := r.in
		if write {
			bufs = r.out
		}
		n := size(bufs)
		if !d.rangeOK(r.sector, n) {
			return StatusIOErr
		}
		if n == 0 {
			return StatusOK
		}
		off := int64(r.sector * sectorSize)
		var err error
		if write {
			var flags block.WriteFlags
			if !d.wce.Load() {
				flags = block.FUA
			}
			_, err = d.disk.WriteV(bufs, off, flags)
		} else {
			_, err = d.disk.ReadV(bufs, off)
		}
		return d.status(err)
	case TypeFlush:
		return d.status(d.disk.Flush())
	case TypeGetID:
		id := append([]byte(d.cfg.Serial), 0)
		id = id[:min(len(id), IDBytes, int(size(r.in)))]
		for _, b := range r.in {
			id = id[copy(b, id):]
		}
		return StatusOK
	case TypeDiscard, TypeWriteZeroes:
		if d.cfg.ReadOnly {
			return StatusIOErr
		}
		return d.discardWriteZeroes(r)
	}
	return StatusUnsupp
}

// discardWriteZeroes serves one segment, as QEMU's
// virtio_blk_discard_write_zeroes answers each case.
func (d *Device) discardWriteZeroes(r *request) byte {
	if size(r.out) > segmentSize {
		return StatusUnsupp // only one segment (max_*_seg = 1)
	}
	var seg [segmentSize]byte
	if _, n := consume(r.out, seg[:]); n != segmentSize {
		return StatusIOErr
	}
	sector := binary.LittleEndian.Uint64(seg[0:])
	num := binary.LittleEndian.Uint32(seg[8:])
	flags := binary.LittleEndian.Uint32(seg[12:])
	zeroes := r.typ&^typeBarrier == TypeWriteZeroes
	max := uint32(MaxDiscardSectors)
	if zeroes {
		max = MaxWriteZeroesSectors
	}
	if num > max || !d.rangeOK(sector, uint64(num)*sectorSize) {
		return StatusIOErr
	}
	if flags&^FlagUnmap != 0 || !zeroes && flags&FlagUnmap != 0 {
		return StatusUnsupp
	}
	off, length := int64(sector*sectorSize), int64(num)*sectorSize
	if zeroes {
		return d.status(d.disk.WriteZeroes(off, length, flags&FlagUnmap != 0))
	}
	return d.status(d.disk.Discard(off, length))
}

func (d *Device) status(err error) byte {
	if err == nil {
		return StatusOK
	}
	if d.cfg.OnIOError != nil {
		d.cfg.OnIOError(err)
	}
	return StatusIOErr
}
