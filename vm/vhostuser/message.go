package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The header every message starts with: request, flags, payload size,
// each a little-endian u32.
const headerSize = 12

// Flags bits.
const (
	flagVersion   = 0x1 // the only protocol version
	flagVersionMk = 0x3
	flagReply     = 1 << 2
	flagNeedReply = 1 << 3
)

// maxPayload bounds a message's payload: the largest a front end sends is
// a memory table of maxRegions entries, or a config space (at most 256
// bytes, VHOST_USER_MAX_CONFIG_SIZE) with its 12-byte header.
const maxPayload = 8 + maxRegions*32

// maxFds is the most fds one message may carry: one per memory region.
const maxFds = maxRegions

// maxRegions is how many regions SET_MEM_TABLE may carry
// (VHOST_MEMORY_BASELINE_NREGIONS).
const maxRegions = 8

// Message is one vhost-user message. Fds are owned by whoever holds the
// message: a handler that keeps one takes it out of Fds (sets it to -1);
// the rest are closed after the handler returns.
type Message struct {
	Request Request
	Flags   uint32
	Payload []byte
	Fds     []int
}

// ErrProtocol is a message that breaks the protocol; the connection that
// sent it is closed. The wrapping error says how.
var ErrProtocol = errors.New("vhost-user protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// decodeHeader checks a header and returns the payload size it announces.
func decodeHeader(h []byte) (Request, uint32, uint32, error) {
	req := Request(binary.LittleEndian.Uint32(h[0:]))
	flags := binary.LittleEndian.Uint32(h[4:])
	size := binary.LittleEndian.Uint32(h[8:])
	if flags&flagVersionMk != flagVersion {
		return req, flags, size, protoErr("%v: version %d, want 1", req, flags&flagVersionMk)
	}
	if flags&flagReply != 0 {
		return req, flags, size, protoErr("%v: a reply sent to the back end", req)
	}
	if size > maxPayload {
		return req, flags, size, protoErr("%v: payload of %d bytes, at most %d", req, size, maxPayload)
	}
	return req, flags, size, nil
}

// encode is m's wire form (its fds travel beside it).
func (m *Message) encode() []byte {
	b := make([]byte, headerSize+len(m.Payload))
	binary.LittleEndian.PutUint32(b[0:], uint32(m.Request))
	binary.LittleEndian.PutUint32(b[4:], m.Flags)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(m.Payload)))
	copy(b[headerSize:], m.Payload)
	return b
}

// u64 is the payload of the messages that carry one number.
func (m *Message) u64() (uint64, error) {
	if len(m.Payload) < 8 {
		return 0, protoErr("%v: payload of %d bytes, want 8", m.Request, len(m.Payload))
	}
	return binary.LittleEndian.Uint64(m.Payload), nil
}

func u64Payload(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// VringState is the payload of SET_VRING_NUM, SET_VRING_BASE,
// GET_VRING_BASE and SET_VRING_ENABLE.
type VringState struct{ Index, Num uint32 }

func (m *Message) vringState() (VringState, error) {
	if len(m.Payload) < 8 {
		return VringState{}, protoErr("%v: payload of %d bytes, want 8", m.Request, len(m.Payload))
	}
	return VringState{binary.LittleEndian.Uint32(m.Payload), binary.LittleEndian.Uint32(m.Payload[4:])}, nil
}

func (s VringState) encode() []byte {
	b := binary.LittleEndian.AppendUint32(nil, s.Index)
	return binary.LittleEndian.AppendUint32(b, s.Num)
}

// VringAddr is SET_VRING_ADDR's payload: the rings' addresses in the
// front end's address space (user addresses), in the wire's order.
type VringAddr struct {
	Index, Flags                  uint32
	Desc, Used, Avail, LogGuestPA uint64
}

const vringAddrSize = 40

func (m *Message) vringAddr() (VringAddr, error) {
	p := m.Payload
	if len(p) < vringAddrSize {
		return VringAddr{}, protoErr("%v: payload of %d bytes, want %d", m.Request, len(p), vringAddrSize)
	}
	le := binary.LittleEndian
	return VringAddr{le.Uint32(p), le.Uint32(p[4:]), le.Uint64(p[8:]), le.Uint64(p[16:]), le.Uint64(p[24:]), le.Uint64(p[32:])}, nil
}

func (a VringAddr) encode() []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, a.Index)
	b = le.AppendUint32(b, a.Flags)
	for _, v := range []uint64{a.Desc, a.Used, a.Avail, a.LogGuestPA} {
		b = le.AppendUint64(b, v)
	}
	return b
}

// MemRegion is one entry of SET_MEM_TABLE.
type MemRegion struct{ GPA, Size, UserAddr, MmapOffset uint64 }

func (m *Message) memTable() ([]MemRegion, error) {
	p := m.Payload
	if len(p) < 8 {
		return nil, protoErr("%v: payload of %d bytes", m.Request, len(p))
	}
	n := binary.LittleEndian.Uint32(p)
	if n == 0 || n > maxRegions {
		return nil, protoErr("%v: %d regions, want 1 to %d", m.Request, n, maxRegions)
	}
	if uint64(len(p)) < 8+uint64(n)*32 {
		return nil, protoErr("%v: %d regions in a payload of %d bytes", m.Request, n, len(p))
	}
	if len(m.Fds) != int(n) {
		return nil, protoErr("%v: %d regions but %d fds", m.Request, n, len(m.Fds))
	}
	regs := make([]MemRegion, n)
	le := binary.LittleEndian
	for i := range regs {
		e := p[8+32*i:]
		regs[i] = MemRegion{le.Uint64(e), le.Uint64(e[8:]), le.Uint64(e[16:]), le.Uint64(e[24:])}
	}
	return regs, nil
}

func encodeMemTable(regs []MemRegion) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, uint32(len(regs)))
	b = le.AppendUint32(b, 0)
	for _, r := range regs {
		for _, v := range []uint64{r.GPA, r.Size, r.UserAddr, r.MmapOffset} {
			b = le.AppendUint64(b, v)
		}
	}
	return b
}

// ConfigSpace is the payload of GET_CONFIG and SET_CONFIG.
type ConfigSpace struct {
	Offset, Flags uint32
	Data          []byte
}

// maxConfigSize is VHOST_USER_MAX_CONFIG_SIZE.
const maxConfigSize = 256

func (m *Message) config() (ConfigSpace, error) {
	p := m.Payload
	if len(p) < 12 {
		return ConfigSpace{}, protoErr("%v: payload of %d bytes", m.Request, len(p))
	}
	le := binary.LittleEndian
	c := ConfigSpace{Offset: le.Uint32(p), Flags: le.Uint32(p[8:])}
	size := le.Uint32(p[4:])
	if size > maxConfigSize || uint64(len(p)) < 12+uint64(size) {
		return ConfigSpace{}, protoErr("%v: config of %d bytes in a payload of %d", m.Request, size, len(p))
	}
	c.Data = p[12 : 12+size]
	return c, nil
}

func (c ConfigSpace) encode() []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, c.Offset)
	b = le.AppendUint32(b, uint32(len(c.Data)))
	b = le.AppendUint32(b, c.Flags)
	return append(b, c.Data...)
}

// vringFd is the payload of SET_VRING_KICK/CALL/ERR: the queue index in
// bits 0-7 and, in bit 8, "no fd" (polling or no notification).
func (m *Message) vringFd() (index uint32, fd int, err error) {
	v, err := m.u64()
	if err != nil {
		return 0, -1, err
	}
	const invalidFd = 1 << 8
	if v&^(invalidFd|0xff) != 0 {
		return 0, -1, protoErr("%v: reserved bits set in 0x%x", m.Request, v)
	}
	wantFds := 1
	if v&invalidFd != 0 {
		wantFds = 0
	}
	if len(m.Fds) != wantFds {
		return 0, -1, protoErr("%v: %d fds, want %d", m.Request, len(m.Fds), wantFds)
	}
	fd = -1
	if wantFds == 1 {
		fd = m.Fds[0]
	}
	return uint32(v & 0xff), fd, nil
}
